"""Three nodes in one process (memory storage + memory transport) serving the client.

Exercises the whole write and read path: bootstrap, routing, NotLeader hints, sessions,
linearizable and stale reads, failover. Real time; every wait polls with a deadline.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from atoll.client import AtollClient
from atoll.core import ConfigError, InvalidRequest, parse_config
from atoll.node import Node
from atoll.placement import partition_for_key
from atoll.replication import WalEngine
from atoll.storage.memory import _plugin as memory_storage
from atoll.testing import MemoryNetwork
from atoll.transport.memory import MemoryTransport
from atoll.transport.memory import _plugin as memory_transport

pytestmark = pytest.mark.anyio

IDS = ["n1", "n2", "n3"]
_client_ids = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def node_config(
    nid: str,
    tmp: Path,
    net: MemoryNetwork,
    partitions: int = 8,
    snapshot_every: int = 100_000,
    log_storage: str = "auto",
) -> Any:
    cfg = parse_config(
        {
            "node": {"id": nid, "listen": f"{nid}:1", "data_dir": str(tmp / nid)},
            "cluster": {
                "initial_members": [f"{n}={n}:1" for n in IDS],
                "partitions": partitions,
            },
            "storage": {"backend": "memory"},
            "transport": {"backend": "memory"},
            "raft": {
                "tick_ms": 10,
                "election_ticks": 10,
                "snapshot_interval_entries": snapshot_every,
                "log_storage": log_storage,
            },
        },
        environ={},
    )
    cfg.transport.options["network"] = net
    return cfg


async def wait_for(cond: Callable[[], Any], timeout: float = 15.0) -> Any:
    with anyio.fail_after(timeout):
        while not (v := cond()):
            await anyio.sleep(0.01)
        return v


class Cluster:
    def __init__(self, net: MemoryNetwork, nodes: dict[str, Node], scopes: dict[str, Any]):
        self.net = net
        self.nodes = nodes
        self.scopes = scopes


@pytest.fixture
def snapshot_every() -> int:
    return 100_000


@pytest.fixture
def log_storage() -> str:
    return "auto"


@pytest.fixture
async def cluster(tmp_path: Path, snapshot_every: int, log_storage: str) -> AsyncIterator[Cluster]:
    net = MemoryNetwork()
    nodes: dict[str, Node] = {}
    scopes: dict[str, anyio.CancelScope] = {}
    async with anyio.create_task_group() as tg:

        async def run(nid: str, *, task_status: Any) -> None:
            with anyio.CancelScope() as scope:
                scopes[nid] = scope
                await nodes[nid].run(task_status=task_status)

        for nid in IDS:
            nodes[nid] = Node(
                node_config(
                    nid, tmp_path, net, snapshot_every=snapshot_every, log_storage=log_storage
                ),
                plugins=(memory_storage, memory_transport),
                load_entry_points=False,
            )
            await tg.start(run, nid)
        for n in nodes.values():
            await n.wait_ready(20)
        yield Cluster(net, nodes, scopes)
        tg.cancel_scope.cancel()


async def client(c: Cluster, endpoint: str = "n1:1") -> AtollClient:
    t = MemoryTransport(c.net, f"client-{next(_client_ids)}")

    async def nothing(frame: Any, sender: str) -> None:
        return None

    await t.start(nothing)
    cl = AtollClient([endpoint], transport=t, timeout=10)
    await cl.connect()
    return cl


async def test_put_get_delete_cas_batch_through_any_node(cluster: Cluster) -> None:
    c1 = await client(cluster, "n1:1")
    c3 = await client(cluster, "n3:1")
    for i in range(40):
        await c1.put(b"key-%d" % i, b"value-%d" % i)
    for i in range(40):
        assert await c3.get(b"key-%d" % i) == b"value-%d" % i
    assert await c3.get(b"missing") is None
    assert await c1.delete(b"key-0") is True
    assert await c1.delete(b"key-0") is False
    assert await c3.get(b"key-0") is None
    r = await c1.cas(b"key-1", b"value-1", b"swapped")
    assert r.succeeded and r.previous == b"value-1"
    r = await c1.cas(b"key-1", b"value-1", b"again")
    assert not r.succeeded and r.previous == b"swapped"
    assert (await c1.cas(b"new", None, b"created")).succeeded
    await c1.put_many({b"b%d" % i: b"%d" % i for i in range(30)})
    assert await c3.get(b"b29") == b"29"
    stale = await c3.get(b"b29", consistency="stale")
    assert stale in (b"29", None)  # any replica: may lag, never wrong


async def test_invalid_requests_get_clear_errors_and_the_node_keeps_serving(
    cluster: Cluster,
) -> None:
    c = await client(cluster)
    with pytest.raises(InvalidRequest, match="key must not be empty"):
        await c.put(b"", b"v")
    with pytest.raises(InvalidRequest, match="exceeds the limit of 1048576 bytes"):
        await c.put(b"k", b"x" * (1024 * 1024 + 1))
    with pytest.raises(InvalidRequest, match="must be bytes"):
        await c.put("text", b"v")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="value must be bytes, not str"):
        await c.cas(b"k", "old", b"new")  # type: ignore[arg-type]
    c.max_value_bytes = 10**9  # bypass the client check: the node refuses it too
    with pytest.raises(InvalidRequest, match="exceeds the limit"):
        await c.put(b"k", b"x" * (1024 * 1024 + 1))
    await c.put(b"k", b"fine")
    assert await c.get(b"k") == b"fine"


async def test_concurrent_requests_are_coalesced_and_each_gets_its_own_answer(
    cluster: Cluster,
) -> None:
    c = await client(cluster, "n2:1")
    keys = [b"co-%d" % i for i in range(120)]
    async with anyio.create_task_group() as tg:
        for k in keys:
            tg.start_soon(c.put, k, k + b"!")
    got: dict[bytes, bytes | None] = {}

    async def read(k: bytes) -> None:
        got[k] = await c.get(k)

    async with anyio.create_task_group() as tg:
        for k in keys:
            tg.start_soon(read, k)
        tg.start_soon(read, b"co-missing")
    assert got == {**{k: k + b"!" for k in keys}, b"co-missing": None}
    assert c.stats["multi_frames"] > 0
    assert c.stats["multi_requests"] > 2 * c.stats["multi_frames"]


async def test_a_multi_frame_answers_each_request_on_its_own(cluster: Cluster) -> None:
    """A kv.multi sent to one node: requests for partitions it leads succeed, the others
    get NotLeader with a hint, an invalid one InvalidRequest; a malformed envelope fails
    as a whole and the node keeps serving."""
    from atoll.core import (
        Frame,
        KVOp,
        KVRequest,
        NotLeader,
        decode_kv_multi_reply,
        encode_kv_multi,
        encode_kv_request,
    )

    c = await client(cluster, "n1:1")
    t = c._transport
    assert t is not None
    reqs = [KVRequest(KVOp.PUT, "default", 0, key=b"m-%d" % i, value=b"x") for i in range(24)]
    reqs.append(KVRequest(KVOp.PUT, "nope", 0, key=b"k", value=b"x"))
    reqs.append(KVRequest(KVOp.GET, "default", 0, key=b""))
    frame = encode_kv_multi([encode_kv_request(r) for r in reqs])
    reply = await t.request("n1:1", frame, timeout=10)
    results = decode_kv_multi_reply(reply, len(reqs))
    ok = [r for r in results[:24] if isinstance(r, Frame)]
    moved = [r for r in results[:24] if isinstance(r, NotLeader)]
    assert ok and moved and len(ok) + len(moved) == 24
    assert all(r.type == "kv.put.ok" for r in ok)
    assert all(r.leader_hint in IDS and r.leader_hint != "n1" for r in moved)
    assert isinstance(results[24], InvalidRequest) and "nope" in results[24].message
    assert isinstance(results[25], InvalidRequest) and "empty" in results[25].message
    bad = Frame("kv.multi", {"q": [["kv.get", {}]], "n": [3]}, (b"k",))
    with pytest.raises(InvalidRequest, match="does not match"):
        await t.request("n1:1", bad, timeout=10)
    for i, r in enumerate(results[:24]):
        assert await c.get(b"m-%d" % i) == (b"x" if isinstance(r, Frame) else None)


@pytest.mark.parametrize("log_storage", ["engine", "wal"])
async def test_partition_leader_failover_keeps_acknowledged_writes(cluster: Cluster) -> None:
    c = await client(cluster, "n2:1")
    acked: dict[bytes, bytes] = {}
    for i in range(30):
        await c.put(b"f%d" % i, b"v%d" % i)
        acked[b"f%d" % i] = b"v%d" % i
    # isolate the node that leads the most partitions, keep writing through the others
    victim = max(cluster.nodes.values(), key=lambda n: n.status()["leaders"]).node_id
    assert {n.status()["event_loop"] for n in cluster.nodes.values()} == {"asyncio"}
    cluster.net.isolate(f"{victim}:1")
    survivor = next(n for n in IDS if n != victim)
    c2 = await client(cluster, f"{survivor}:1")
    for i in range(30, 60):
        await c2.put(b"f%d" % i, b"v%d" % i)
        acked[b"f%d" % i] = b"v%d" % i
    for k, v in acked.items():
        assert await c2.get(k) == v
    cluster.net.heal()
    await wait_for(
        lambda: (
            cluster.nodes[victim].status()["groups"]["1"]["applied"]
            >= cluster.nodes[survivor].status()["groups"]["1"]["applied"]
        )
    )


@pytest.mark.parametrize("snapshot_every", [25])
@pytest.mark.parametrize("log_storage", ["engine", "wal"])
async def test_a_follower_behind_the_compacted_log_catches_up_from_a_snapshot(
    cluster: Cluster, log_storage: str
) -> None:
    ks = cluster.nodes["n1"].cluster_map.keyspace("default")
    part = partition_for_key(b"s0", ks.partitions)
    gid = ks.group_of(part)

    def group(nid: str) -> Any:
        host = cluster.nodes[nid].host
        assert host is not None
        return host.groups[gid]

    c = await client(cluster)
    for i in range(10):
        await c.put(b"s%d" % i, b"v%d" % i)
    # cut off a follower of the partition holding "s0", write past several snapshots
    leader = await wait_for(lambda: next((n for n in IDS if group(n).is_leader), None))
    victim = next(n for n in IDS if n != leader)
    cluster.net.isolate(f"{victim}:1")
    c2 = await client(cluster, f"{leader}:1")
    keys = [b"s%d" % i for i in range(300)]
    mine = [k for k in keys if partition_for_key(k, ks.partitions) == part]
    for k in keys[10:]:
        await c2.put(k, k + b"-v")
    # the leader built snapshots (off its event loop) and compacted the log
    await wait_for(lambda: group(leader).storage.snapshot_index > 0)
    assert group(leader).storage.first_index() > 1
    assert len(mine) > 30
    cluster.net.heal()
    target = group(leader).node.status().applied
    await wait_for(lambda: group(victim).node.status().applied >= target)
    await wait_for(lambda: group(victim).durable_applied >= target)
    # the follower holds every write, including those it only received in a snapshot
    assert group(victim).restores >= 1  # it installed the leader's snapshot
    engine = cluster.nodes[victim].host_engine
    assert isinstance(engine, WalEngine) == (log_storage == "wal")
    kv = cluster.nodes[victim].kv
    assert kv is not None
    for k in mine:
        want = b"v%d" % int(k[1:]) if int(k[1:]) < 10 else k + b"-v"
        assert kv.get(gid, k) == want


async def test_engine_log_storage_on_a_directory_with_a_wal_is_refused(tmp_path: Path) -> None:
    (tmp_path / "n1" / "raftwal").mkdir(parents=True)
    node = Node(
        node_config("n1", tmp_path, MemoryNetwork(), log_storage="engine"),
        plugins=(memory_storage, memory_transport),
        load_entry_points=False,
    )
    with pytest.raises(ConfigError, match=r"log_storage = 'engine'.*raftwal"):
        await node.run()


def test_log_storage_must_be_a_known_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"raft\.log_storage = 'disk'"):
        node_config("n1", tmp_path, MemoryNetwork(), log_storage="disk")


async def test_an_lmdb_cluster_moves_its_log_into_the_wal_and_keeps_every_write(
    tmp_path: Path,
) -> None:
    """Three LMDB nodes written with the log in the engine restart with ``auto`` (the
    WAL on LMDB), then restart again from the WAL: every write is there each time."""
    from atoll.storage.lmdb import _plugin as lmdb_storage

    net = MemoryNetwork()

    async def run_cluster(mode: str, body: Callable[[Cluster], Any]) -> None:
        nodes: dict[str, Node] = {}
        async with anyio.create_task_group() as tg:
            for nid in IDS:
                cfg = node_config(nid, tmp_path, net, log_storage=mode)
                cfg.storage.backend = "lmdb"
                cfg.storage.map_size_mb = 64
                nodes[nid] = Node(
                    cfg, plugins=(lmdb_storage, memory_transport), load_entry_points=False
                )
                await tg.start(nodes[nid].run)
            for n in nodes.values():
                await n.wait_ready(20)
            await body(Cluster(net, nodes, {}))
            tg.cancel_scope.cancel()

    async def write_some(c: Cluster) -> None:
        cl = await client(c)
        for i in range(40):
            await cl.put(b"k%d" % i, b"v%d" % i)
        assert not isinstance(c.nodes["n1"].host_engine, WalEngine)

    async def check_and_write(c: Cluster, n: int) -> None:
        assert all(isinstance(node.host_engine, WalEngine) for node in c.nodes.values())
        scrape = c.nodes["n1"].metrics.exposition().decode()
        assert "atoll_raft_wal_segments 1.0" in scrape
        assert "atoll_raft_wal_syncs" in scrape
        cl = await client(c, "n2:1")
        for i in range(n):
            assert await cl.get(b"k%d" % i) == b"v%d" % i
        for i in range(n, n + 10):
            await cl.put(b"k%d" % i, b"v%d" % i)

    await run_cluster("engine", write_some)
    await run_cluster("auto", lambda c: check_and_write(c, 40))
    for nid in IDS:
        assert (tmp_path / nid / "raftwal").is_dir()
    await run_cluster("auto", lambda c: check_and_write(c, 50))
