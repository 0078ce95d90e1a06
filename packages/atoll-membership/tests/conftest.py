"""Helpers shared by the membership tests: a converged simulated cluster."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from atoll.core import MembershipEvent
from atoll.detection import DetectionConfig
from atoll.membership import MembershipConfig, SimCluster, wire_size
from atoll.testing import LinkFaults, Scheduler, SimNetwork

Recorder = list[tuple[float, str, MembershipEvent]]


def make_sim(
    n: int, mode: str = "swim+lifeguard", seed: int = 1, drop: float = 0.0, **cfg: object
) -> tuple[Scheduler, SimNetwork, SimCluster, list[str], Recorder]:
    sched = Scheduler(seed)
    net = SimNetwork(sched, LinkFaults(drop=drop), size_of=wire_size)
    config = MembershipConfig.lan(detection=DetectionConfig.lan(mode=mode), **cfg)
    cluster = SimCluster(sched, net, config)
    ids = [f"n{i}" for i in range(n)]
    cluster.bootstrap(ids)
    events: Recorder = []
    cluster.listeners.append(lambda t, obs, ev: events.append((t, obs, ev)))
    return sched, net, cluster, ids, events


@pytest.fixture
def sim() -> Callable[..., tuple[Scheduler, SimNetwork, SimCluster, list[str], Recorder]]:
    return make_sim
