"""Real node processes on loopback: the write path, failover and recovery.

Every wait polls a condition with a deadline. Nothing here asserts a timing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from atoll.admin import DevCluster
from atoll.admin._dev import fetch_status
from atoll.client import AtollClient
from atoll.core import AtollError

pytestmark = pytest.mark.anyio


def leader_counts(c: DevCluster) -> dict[str, int]:
    out = {}
    for n in (c.state() or {"nodes": []})["nodes"]:
        s = c.status(n["id"])
        if s is not None:
            out[n["id"]] = s["leaders"]
    return out


def endpoints(c: DevCluster) -> list[str]:
    return c.endpoints()


async def test_write_through_one_node_read_through_another(
    make_cluster: Callable[..., DevCluster],
) -> None:
    c = make_cluster(3)
    eps = endpoints(c)
    async with AtollClient([eps[0]]) as w, AtollClient([eps[2]]) as r:
        for i in range(50):
            await w.put(b"k%d" % i, b"v%d" % i)
        for i in range(50):
            assert await r.get(b"k%d" % i) == b"v%d" % i
    # node.event_loop defaults to auto: uvloop, which atoll-node depends on.
    for node in c.state()["nodes"]:
        assert "event loop: uvloop" in Path(node["log"]).read_text()
    assert [(await fetch_status(ep, 5.0))["event_loop"] for ep in eps] == ["uvloop"] * 3
    # Each node says whether its Raft core runs compiled; `nox -s native` requires it.
    packages = {"atoll.core", "atoll.election", "atoll.replication", "atoll.coordination"}
    for ep in eps:
        native = (await fetch_status(ep, 5.0))["native"]
        assert set(native) == packages
        if os.environ.get("ATOLL_NATIVE_REQUIRED") == "1":
            assert set(native.values()) == {"native"}, native
    for node in c.state()["nodes"]:
        assert "atoll.replication: " in Path(node["log"]).read_text()


@pytest.mark.parametrize(
    ("storage", "transport"),
    [("lmdb", "tcp"), ("rocksdb", "nats")],
    ids=["tcp-lmdb", "nats-rocksdb"],
)
async def test_kill_leader_during_writes_loses_no_acknowledged_write(
    make_cluster: Callable[..., DevCluster], storage: str, transport: str, request: Any
) -> None:
    servers = None
    if transport == "nats":
        servers = [request.getfixturevalue("nats_server").url]
    c = make_cluster(3, storage=storage, transport=transport, nats_servers=servers)
    eps = endpoints(c)
    acked: dict[bytes, bytes] = {}
    counts = leader_counts(c)
    victim = max(counts, key=lambda k: counts[k])
    async with AtollClient(eps, timeout=20, **c.client_options()) as client:

        async def writer(wid: int) -> None:
            for i in range(60):
                k, v = b"w%d-%d" % (wid, i), b"v%d" % i
                try:
                    await client.put(k, v)
                except AtollError:
                    continue  # outcome unknown: not acknowledged, not checked
                acked[k] = v

        async with anyio.create_task_group() as tg:
            for wid in range(8):
                tg.start_soon(writer, wid)
            await anyio.sleep(0.3)  # let the load start before the crash
            c.kill(victim, signal.SIGKILL)
        assert len(acked) > 0
        for k, v in acked.items():
            assert await client.get(k) == v, k
    # restart everything: acknowledged writes survive a full-cluster restart
    c.restart(victim)
    for n in ("n1", "n2", "n3"):
        c.kill(n, signal.SIGKILL)
    for n in ("n1", "n2", "n3"):
        c.restart(n)
    c.wait_ready(60)
    async with AtollClient(eps, timeout=20, **c.client_options()) as client:
        for k, v in acked.items():
            assert await client.get(k) == v, k


async def test_client_pointed_at_a_dead_node_finds_a_live_one(
    make_cluster: Callable[..., DevCluster],
) -> None:
    c = make_cluster(3)
    eps = endpoints(c)
    c.kill("n1", signal.SIGKILL)
    async with AtollClient(eps, timeout=20, **c.client_options()) as client:  # eps[0] is dead
        await client.put(b"alive", b"yes")
        assert await client.get(b"alive") == b"yes"
    async with AtollClient([eps[1]], timeout=20) as client:
        await client.put(b"x", b"1")
    c.kill("n2", signal.SIGKILL)  # the client's only endpoint dies; the map knows n3
    c.restart("n2")
    c.restart("n1")
    async with AtollClient([eps[2]], timeout=20) as client:
        assert await client.get(b"x") == b"1"
