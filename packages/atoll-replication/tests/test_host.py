"""The multi-group Raft host on real (memory and LMDB) storage and the memory transport.

Real time, fast ticks (10 ms); every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import struct
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from host_harness import LogSM, WrappedEngine, wait_for
from host_harness import open_engine as _engine

from atoll.core import (
    DiskFull,
    Frame,
    NotLeader,
    StorageEngine,
    Timeout,
    WriteBatch,
)
from atoll.replication._host import BATCH_FRAME, RaftHost, _finish_shielded
from atoll.testing import MemoryNetwork
from atoll.transport.memory import MemoryTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Cluster:
    def __init__(
        self, tg: Any, net: MemoryNetwork, ids: list[str], engines: dict[str, StorageEngine]
    ):
        self.tg = tg
        self.net = net
        self.ids = ids
        self.engines = engines
        self.hosts: dict[str, RaftHost] = {}
        self.transports: dict[str, MemoryTransport] = {}
        self.sms: dict[tuple[str, int], LogSM] = {}

    async def start(
        self,
        nid: str,
        groups: Sequence[int],
        tick: float = 0.01,
        sm_class: type[LogSM] | None = None,
        **host_kw: Any,
    ) -> None:
        t = MemoryTransport(self.net, nid)
        host = RaftHost(nid, self.engines[nid], t, lambda peer: peer, tick_seconds=tick, **host_kw)

        async def handler(frame: Frame, sender: str) -> Frame | None:
            if frame.type == BATCH_FRAME:
                await host.handle_frame(frame, sender)
            return None

        await t.start(handler)
        for g in groups:
            sm = (sm_class or LogSM)(self.engines[nid], g)
            self.sms[(nid, g)] = sm
            host.add_group(g, self.ids, sm)
        self.hosts[nid] = host
        self.transports[nid] = t
        await self.tg.start(host.run)

    async def stop(self, nid: str) -> None:
        await self.hosts.pop(nid).close()
        await self.transports.pop(nid).close()

    def leader(self, group: int) -> str | None:
        leaders = [n for n, h in self.hosts.items() if h.groups[group].is_leader]
        return leaders[0] if len(leaders) == 1 else None


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    ids = ["n1", "n2", "n3"]
    async with anyio.create_task_group() as tg:
        c = Cluster(tg, MemoryNetwork(), ids, {n: _engine("memory", tmp_path / n) for n in ids})
        for n in ids:
            await c.start(n, [1, 2])
        yield c
        for n in list(c.hosts):
            await c.stop(n)
        tg.cancel_scope.cancel()


async def test_elects_replicates_and_applies_on_every_replica(cluster: Cluster) -> None:
    leader = await wait_for(lambda: cluster.leader(1))
    g = cluster.hosts[leader].groups[1]
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(lambda i=i: g.propose(f"v{i}".encode(), timeout=5))
    await wait_for(lambda: all(len(cluster.sms[(n, 1)].values()) == 50 for n in cluster.ids))
    assert cluster.sms[("n1", 1)].values() == cluster.sms[("n2", 1)].values()
    # group commit: 50 concurrent proposals took far fewer fsyncs than entries
    assert cluster.hosts[leader].stats["fsyncs"] < 50


async def test_propose_returns_the_applied_result_and_reads_need_the_leader(
    cluster: Cluster,
) -> None:
    leader = await wait_for(lambda: cluster.leader(2))
    g = cluster.hosts[leader].groups[2]
    index = await g.propose(b"hello", timeout=5)
    assert isinstance(index, int) and index > 0
    await g.read_barrier(timeout=5)
    follower = next(n for n in cluster.ids if n != leader)
    fg = cluster.hosts[follower].groups[2]
    with pytest.raises(NotLeader) as exc:
        await fg.propose(b"x", timeout=1)
    assert exc.value.leader_hint == leader


async def test_isolated_leader_is_replaced_and_catches_up_after_heal(cluster: Cluster) -> None:
    old = await wait_for(lambda: cluster.leader(1))
    await cluster.hosts[old].groups[1].propose(b"before", timeout=5)
    cluster.net.isolate(old)
    new = await wait_for(
        lambda: next(
            (n for n in cluster.ids if n != old and cluster.hosts[n].groups[1].is_leader), None
        )
    )
    await cluster.hosts[new].groups[1].propose(b"after", timeout=5)
    cluster.net.heal()
    await wait_for(lambda: cluster.sms[(old, 1)].values() == [b"before", b"after"])
    await wait_for(lambda: not cluster.hosts[old].groups[1].is_leader)


@pytest.mark.parametrize("wal", [False, True], ids=["engine-log", "wal"])
async def test_restart_recovers_log_and_state_from_lmdb(tmp_path: Path, wal: bool) -> None:
    ids = ["a", "b", "c"]
    net = MemoryNetwork()
    async with anyio.create_task_group() as tg:
        c = Cluster(tg, net, ids, {n: _engine("lmdb", tmp_path / n, wal=wal) for n in ids})
        for n in ids:
            await c.start(n, [7])
        leader = await wait_for(lambda: c.leader(7))
        for i in range(20):
            await c.hosts[leader].groups[7].propose(b"%d" % i, timeout=5)
        await wait_for(lambda: all(len(c.sms[(n, 7)].values()) == 20 for n in ids))
        for n in ids:
            await c.stop(n)
            c.engines[n].close()
        # Restart every node from its files.
        c.engines = {n: _engine("lmdb", tmp_path / n, wal=wal) for n in ids}
        for n in ids:
            await c.start(n, [7])
        assert c.sms[("a", 7)].values() == [b"%d" % i for i in range(20)]
        leader = await wait_for(lambda: c.leader(7))
        await c.hosts[leader].groups[7].propose(b"20", timeout=5)
        await wait_for(lambda: all(len(c.sms[(n, 7)].values()) == 21 for n in ids))
        for n in ids:
            await c.stop(n)
            c.engines[n].close()
        tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def running(
    engines: dict[str, Any], group: int, **start_kw: Any
) -> AsyncIterator[tuple[Cluster, str]]:
    """A host per engine, all running ``group``; yields the cluster and the group's
    leader, then stops every host still running and closes the engines."""
    async with anyio.create_task_group() as tg:
        c = Cluster(tg, MemoryNetwork(), list(engines), engines)
        for n in engines:
            await c.start(n, [group], **start_kw)
        leader = await wait_for(lambda: c.leader(group))
        yield c, leader
        for n in list(c.hosts):
            await c.stop(n)
        tg.cancel_scope.cancel()
    for e in engines.values():
        e.close()


class RecordingEngine(WrappedEngine):
    """Wraps an engine and records every write: (sync, namespaces written). While
    ``lose_applies`` is set, a write carrying state-machine data ("t") is dropped, as a
    crash between the log's write and the apply's would lose it."""

    def __init__(self, inner: StorageEngine) -> None:
        super().__init__(inner)
        self.writes: list[tuple[bool, frozenset[str]]] = []
        self.lose_applies = False

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        spaces = frozenset(ns for _, ns, _, _ in batch.ops)
        self.writes.append((bool(sync), spaces))
        if self.lose_applies and "t" in spaces:
            return
        self._inner.write(batch, sync=sync)


@pytest.mark.parametrize("separate", [0, 1])
async def test_big_applies_are_written_after_the_logs_fsync(tmp_path: Path, separate: int) -> None:
    ids = ["a", "b", "c"]
    engines = {n: RecordingEngine(_engine("memory", tmp_path / n)) for n in ids}
    async with anyio.create_task_group() as tg:
        c = Cluster(tg, MemoryNetwork(), ids, engines)  # type: ignore[arg-type]
        for n in ids:
            await c.start(n, [5], separate_apply_entries=separate)
        leader = await wait_for(lambda: c.leader(5))
        for i in range(30):
            assert await c.hosts[leader].groups[5].propose(b"%d" % i, timeout=5)
        await wait_for(lambda: all(len(c.sms[(n, 5)].values()) == 30 for n in ids))
        # Followers learn a commit with the next append: with separation on, no synced
        # write carries state-machine data; with it off the two share a write.
        synced_with_data = [
            w
            for n in ids
            for w in engines[n].writes
            if w[0] and "t" in w[1]  # type: ignore[attr-defined]
        ]
        assert bool(synced_with_data) == (separate == 0)
        for n in ids:
            await c.stop(n)
        tg.cancel_scope.cancel()


async def test_applies_lost_after_the_logs_fsync_are_applied_again_on_restart(
    tmp_path: Path,
) -> None:
    ids = ["a", "b", "c"]
    async with anyio.create_task_group() as tg:
        engines = {n: RecordingEngine(_engine("lmdb", tmp_path / n)) for n in ids}
        c = Cluster(tg, MemoryNetwork(), ids, engines)  # type: ignore[arg-type]
        for n in ids:
            await c.start(n, [6], separate_apply_entries=1)
        leader = await wait_for(lambda: c.leader(6))
        g = c.hosts[leader].groups[6]
        await g.propose(b"kept", timeout=5)
        await wait_for(lambda: all(len(c.sms[(n, 6)].values()) == 1 for n in ids))
        for n in ids:
            engines[n].lose_applies = True
        for i in range(5):
            await g.propose(b"lost-%d" % i, timeout=5)
        for n in ids:
            await c.stop(n)
        assert all(len(c.sms[(n, 6)].values()) == 1 for n in ids)  # the data never landed
        for n in ids:
            engines[n].close()
        c.engines = {n: _engine("lmdb", tmp_path / n) for n in ids}
        for n in ids:
            await c.start(n, [6], separate_apply_entries=1)
        # the log was durable, so every committed entry is applied again from it
        want = [b"kept"] + [b"lost-%d" % i for i in range(5)]
        await wait_for(lambda: all(c.sms[(n, 6)].values() == want for n in ids))
        for n in ids:
            await c.stop(n)
            c.engines[n].close()
        tg.cancel_scope.cancel()


class GatedEngine(WrappedEngine):
    """Wraps an engine. While ``hold`` is set, an unsynced write carrying state-machine
    data ("t") blocks until ``release`` is set; while ``fail_once`` is set, the next such
    write raises DiskFull instead (once). Records the applied index of every write that
    lands."""

    def __init__(self, inner: StorageEngine, group: int) -> None:
        super().__init__(inner)
        self._applied_key = struct.pack(">IQ", group, 0)
        self.hold = threading.Event()
        self.release = threading.Event()
        self.fail_once = threading.Event()
        self.blocked = threading.Event()
        self.applied_written: list[int] = []

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        applies = not sync and any(ns == "t" for _, ns, _, _ in batch.ops)
        if applies and self.fail_once.is_set():
            self.fail_once.clear()
            raise DiskFull("no space left on device (test)")
        if applies and self.hold.is_set():
            self.blocked.set()
            self.release.wait(timeout=30)
        self._inner.write(batch, sync=sync)
        for _, ns, k, v in batch.ops:
            if ns == "t" and k == self._applied_key:
                self.applied_written.append(struct.unpack(">Q", v)[0])


async def test_an_apply_only_write_runs_after_its_cycle_and_reads_wait_for_it(
    tmp_path: Path,
) -> None:
    ids = ["a", "b", "c"]
    engines = {n: GatedEngine(_engine("memory", tmp_path / n), 7) for n in ids}
    async with running(engines, 7) as (c, leader):
        g = c.hosts[leader].groups[7]
        await g.propose(b"one", timeout=5)
        await g.read_barrier(timeout=5)
        engines[leader].hold.set()  # type: ignore[index]
        # "two" is answered from the in-memory apply; its commit cycle's write (no fsync
        # needed: only the commit index and the applied state) is still blocked.
        assert await g.propose(b"two", timeout=5)
        await wait_for(engines[leader].blocked.is_set)  # type: ignore[index]
        await wait_for(lambda: not c.hosts[leader]._in_cycle)  # the cycle ended meanwhile
        # A linearizable read must not see the engine before that write lands. The
        # lease holds, so it waits for the applied state to reach the commit index,
        # without a ReadIndex round through the core.
        read = g.start_read()
        assert read is not None and g._read_index[read._key] == g.node.status().commit
        with pytest.raises(Timeout):
            await g.read_barrier(timeout=0.3)
        # The next proposal's append still leaves: the cycle did not wait for the write.
        three = g.start_proposal(b"three")
        followers = [n for n in ids if n != leader]
        await wait_for(
            lambda: all(
                c.hosts[n].groups[7].node.status().last_index >= three._key for n in followers
            )
        )
        assert not three.done
        engines[leader].release.set()  # type: ignore[index]
        assert await three.wait(5) and three.error is None
        assert await read.wait(5) and read.error is None
        await g.read_barrier(timeout=5)
        assert c.sms[(leader, 7)].values() == [b"one", b"two", b"three"]


async def test_a_failed_background_write_is_retried_before_any_later_write(
    tmp_path: Path,
) -> None:
    engines = {n: GatedEngine(_engine("memory", tmp_path / n), 8) for n in ["a", "b", "c"]}
    async with running(engines, 8) as (c, leader):
        g = c.hosts[leader].groups[8]
        await g.propose(b"one", timeout=5)
        engines[leader].fail_once.set()  # type: ignore[index]
        await g.propose(b"two", timeout=5)
        for i in range(5):
            await g.propose(b"more-%d" % i, timeout=5)
        await g.read_barrier(timeout=5)
        want = [b"one", b"two"] + [b"more-%d" % i for i in range(5)]
        assert c.sms[(leader, 8)].values() == want
        assert not engines[leader].fail_once.is_set()  # type: ignore[index]
        assert c.hosts[leader].degraded is None
        # the retried write landed before every later one: the applied index never fell
        written = engines[leader].applied_written  # type: ignore[index]
        assert written == sorted(written)


class ViewSnapshotSM(LogSM):
    """Builds snapshots from the host's engine view (``snapshot_at``), waiting for
    ``gate`` first; ``fail`` makes the next build raise."""

    gate = threading.Event()
    started = threading.Event()
    fail = threading.Event()

    def snapshot_at(self, view: Any) -> bytes:
        type(self).started.set()
        type(self).gate.wait(30)
        if type(self).fail.is_set():
            type(self).fail.clear()
            raise RuntimeError("snapshot build failed (test)")
        lo, hi = struct.pack(">IQ", self.group, 1), struct.pack(">IQ", self.group + 1, 0)
        return b"\n".join(v for _, v in view.scan("t", lo, hi))


async def test_snapshots_are_built_off_the_loop_from_a_view_of_the_applied_state(
    tmp_path: Path,
) -> None:
    ids = ["a", "b", "c"]
    ViewSnapshotSM.gate.clear()
    ViewSnapshotSM.started.clear()
    ViewSnapshotSM.fail.set()  # the first build fails: logged, and the host carries on
    engines = {n: _engine("lmdb", tmp_path / n) for n in ids}
    async with running(engines, 9, sm_class=ViewSnapshotSM, snapshot_interval_entries=20) as (
        c,
        leader,
    ):
        g = c.hosts[leader].groups[9]
        for i in range(25):
            await g.propose(b"%d" % i, timeout=5)
        await wait_for(ViewSnapshotSM.started.is_set)
        # A build is running (and blocked): the groups keep committing meanwhile.
        for i in range(25, 30):
            await g.propose(b"%d" % i, timeout=5)
        ViewSnapshotSM.gate.set()
        # The failed build left no snapshot; the next interval's build stores one.
        for i in range(30, 60):
            await g.propose(b"%d" % i, timeout=5)
        for n in ids:
            await wait_for(lambda n=n: c.hosts[n].groups[9].storage.snapshot_index > 0)
            st = c.hosts[n].groups[9].storage
            snap = st.snapshot()
            assert st.first_index() > 1  # the log was compacted
            # The snapshot holds exactly the state at its index, none of what was
            # applied while it was being built.
            want = [
                v
                for _, v in c.engines[n].scan(
                    "t", struct.pack(">IQ", 9, 1), struct.pack(">IQ", 9, snap.meta.index + 1)
                )
            ]
            assert snap.data == b"\n".join(want)
            assert len(want) < 60


async def test_close_waits_for_a_snapshot_being_built(tmp_path: Path) -> None:
    ViewSnapshotSM.gate.clear()
    ViewSnapshotSM.started.clear()
    ViewSnapshotSM.fail.clear()
    engines = {n: _engine("lmdb", tmp_path / n) for n in ["a", "b", "c"]}
    async with running(engines, 11, sm_class=ViewSnapshotSM, snapshot_interval_entries=10) as (
        c,
        leader,
    ):
        for i in range(12):
            await c.hosts[leader].groups[11].propose(b"%d" % i, timeout=5)
        await wait_for(ViewSnapshotSM.started.is_set)
        host = c.hosts[leader]
        closing = asyncio.ensure_future(host.close())
        await anyio.sleep(0.2)  # a bounded look: close must still be waiting
        assert not closing.done(), "close must wait for the build reading the engine"
        ViewSnapshotSM.gate.set()
        await closing


class StallableEngine(WrappedEngine):
    """Wraps an engine; while ``stall`` is set, synced writes block (a stalled disk)."""

    def __init__(self, inner: StorageEngine) -> None:
        super().__init__(inner)
        self.stalled = threading.Event()
        self.release = threading.Event()

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        if sync and self.stalled.is_set():
            self.release.wait(timeout=30)
        self._inner.write(batch, sync=sync)


async def test_a_stalled_leader_disk_does_not_start_elections(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    engines = {n: StallableEngine(_engine("memory", tmp_path / n)) for n in ids}
    async with anyio.create_task_group() as tg:
        c = Cluster(tg, MemoryNetwork(), ids, engines)  # type: ignore[arg-type]
        for n in ids:
            await c.start(n, [3])
        leader = await wait_for(lambda: c.leader(3))
        g = c.hosts[leader].groups[3]
        await g.propose(b"before", timeout=5)
        terms = {n: c.hosts[n].groups[3].node.status().term for n in ids}
        engines[leader].stalled.set()  # type: ignore[index]

        async def stuck_proposal() -> None:
            await g.propose(b"during", timeout=30)

        tg.start_soon(stuck_proposal)
        # 2 s of stalled disk = 20 election timeouts at this tick rate.
        with anyio.move_on_after(2.0):  # the stall's duration, not a synchronisation wait
            while True:
                await anyio.sleep(0.05)
                for n in ids:
                    assert c.hosts[n].groups[3].node.status().term == terms[n], n
                assert c.hosts[leader].groups[3].is_leader
        engines[leader].release.set()  # type: ignore[index]
        await wait_for(lambda: all(len(c.sms[(n, 3)].values()) == 2 for n in ids))
        for n in ids:
            await c.stop(n)
        tg.cancel_scope.cancel()


class FailingEngine(StallableEngine):
    """Synced writes raise DiskFull while ``stalled`` is set."""

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        if sync and self.stalled.is_set():
            raise DiskFull("no space left on device (test)")
        self._inner.write(batch, sync=sync)


async def test_a_full_disk_fails_writes_clearly_and_recovers(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    engines = {n: FailingEngine(_engine("memory", tmp_path / n)) for n in ids}
    async with anyio.create_task_group() as tg:
        c = Cluster(tg, MemoryNetwork(), ids, engines)  # type: ignore[arg-type]
        for n in ids:
            await c.start(n, [4])
        leader = await wait_for(lambda: c.leader(4))
        g = c.hosts[leader].groups[4]
        await g.propose(b"one", timeout=5)
        engines[leader].stalled.set()  # type: ignore[index]
        with pytest.raises(Timeout):  # accepted before the failure was seen: outcome unknown
            await g.propose(b"two", timeout=1)
        await wait_for(lambda: c.hosts[leader].degraded is not None)
        with pytest.raises(DiskFull, match="cannot accept writes"):
            await g.propose(b"three", timeout=1)
        engines[leader].stalled.clear()  # type: ignore[index]
        await wait_for(lambda: c.hosts[leader].degraded is None)
        now_leader = await wait_for(lambda: c.leader(4))
        await c.hosts[now_leader].groups[4].propose(b"four", timeout=5)
        # nothing acknowledged was lost; "two" applied once the disk came back
        await wait_for(lambda: c.sms[(leader, 4)].values() == [b"one", b"two", b"four"])
        for n in ids:
            await c.stop(n)
        tg.cancel_scope.cancel()


async def test_idle_groups_go_quiet_and_wake_on_demand(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    groups = list(range(10, 110))  # 100 groups on every node
    async with anyio.create_task_group() as tg:
        c = Cluster(tg, MemoryNetwork(), ids, {n: _engine("memory", tmp_path / n) for n in ids})
        for n in ids:
            await c.start(n, groups, tick=0.05)
        await wait_for(lambda: all(c.leader(g) for g in groups), timeout=60)
        await wait_for(
            lambda: all(h.quiesced_groups() == len(groups) for h in c.hosts.values()), timeout=30
        )
        sent = sum(h.stats["messages_sent"] for h in c.hosts.values())
        await anyio.sleep(1.0)  # 20 ticks of idleness, measured by counting messages
        # awake, these groups would send ~8,000 heartbeats and responses in that second
        assert sum(h.stats["messages_sent"] for h in c.hosts.values()) - sent < 100
        # a proposal wakes its group (and only its group) and commits
        leader = c.leader(77)
        assert leader is not None
        await c.hosts[leader].groups[77].propose(b"wake", timeout=5)
        await wait_for(lambda: all(c.sms[(n, 77)].values() == [b"wake"] for n in ids))
        # a dead leader's sleeping groups wake on the failure detector's word
        victim = c.leader(12)
        assert victim is not None
        await wait_for(
            lambda: all(h.quiesced_groups() == len(groups) for h in c.hosts.values()), timeout=30
        )
        c.net.isolate(victim)
        for n in ids:
            if n != victim:
                c.hosts[n].on_node_dead(victim)
        await wait_for(
            lambda: any(c.hosts[n].groups[12].is_leader for n in ids if n != victim),
            timeout=30,
        )
        for n in ids:
            await c.stop(n)
        tg.cancel_scope.cancel()


async def test_a_started_write_is_waited_for_when_its_cycle_is_cancelled() -> None:
    """A cancelled cycle must not leave its engine write running unseen (the node would
    close the engine under it): cancellation takes effect once the write is done."""
    gate = threading.Event()
    wrote: list[int] = []

    def write() -> None:
        gate.wait(30)
        wrote.append(1)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        task = asyncio.ensure_future(_finish_shielded(asyncio.wrap_future(pool.submit(write))))
        await asyncio.sleep(0)
        task.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done(), "cancellation must wait for the write in progress"
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert wrote == [1]
