"""Routing through failover: NotLeader hints, dead nodes, and no tight retry loops."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from atoll.client import AtollClient
from atoll.core import Frame, NotLeader
from atoll.metadata import ClusterMap, KeyspaceRecord, NodeRecord, ReplicaSet

pytestmark = pytest.mark.anyio

NODES = ("n1", "n2", "n3")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Scripted:
    """A transport whose nodes answer as a failover in progress would.

    ``n1`` is the dead old leader (connection refused). ``n3`` is the new leader: it says
    NotLeader (no leader known yet) until ``n3_leads_after`` requests have reached it.
    ``n2`` is a follower that already knows ``n3`` leads and says so in its hint.
    """

    def __init__(self, n3_leads_after: int) -> None:
        self.n3_leads_after = n3_leads_after
        self.calls: list[str] = []

    async def request(self, address: str, frame: Frame, *, timeout: float) -> Frame:
        node = address.split(":", maxsplit=1)[0]
        self.calls.append(node)
        await asyncio.sleep(0)
        if node == "n1":
            raise ConnectionRefusedError(f"{address} refused")
        if node == "n2":
            raise NotLeader("node n2 does not lead group 1", leader_hint="n3", group_id=1)
        if self.calls.count("n3") <= self.n3_leads_after:
            raise NotLeader("node n3 does not lead group 1", leader_hint=None, group_id=1)
        return Frame("kv.get.ok", {"f": True}, (b"value",))


def client_on(transport: Any, replicas: tuple[str, ...]) -> AtollClient:
    c = AtollClient(
        ["n1:1"], transport=transport, timeout=5.0, coalesce=False, rng=random.Random(7)
    )
    c._map = ClusterMap(
        cluster_id="c",
        epoch=3,
        nodes={n: NodeRecord(n, f"{n}:1") for n in NODES},
        keyspaces={"default": KeyspaceRecord("default", 1, 3, 1)},
        groups={1: ReplicaSet(1, "default", 0, replicas)},
    )
    c._leaders[1] = "n1"  # the cached leader died
    return c


async def test_a_hint_to_a_node_that_failed_earlier_is_retried_after_a_backoff() -> None:
    # n1 refuses, n3 says it does not lead (the election is still running), then n2
    # points at n3, which has won since. The client used to follow the hint at once,
    # find n3 already tried, ask n2 again, and bounce between them until its deadline.
    t = Scripted(n3_leads_after=1)
    c = client_on(t, ("n1", "n3", "n2"))
    assert await c.get(b"k") == b"value"
    assert t.calls == ["n1", "n3", "n2", "n3"]
    assert c._leaders[1] == "n3"


async def test_a_hint_that_keeps_failing_costs_a_backoff_every_round() -> None:
    # n2 keeps hinting n3 while n3 keeps saying it does not lead: every round costs a
    # backoff, so a 0.6 s deadline sees a handful of requests, not tens of thousands.
    t = Scripted(n3_leads_after=10**9)
    c = client_on(t, ("n1", "n3", "n2"))
    with pytest.raises(Exception, match="did not complete before its deadline"):
        await c.get(b"k", timeout=0.6)
    assert 3 <= len(t.calls) < 40
    assert c.stats["not_leader"] < 40
