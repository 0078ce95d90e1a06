"""The write-back buffer: reads through it against a model, and the Raft host writing
state-machine data through it (visible before it is written, written once per tick,
rebuilt from the log after a crash, written out before a snapshot)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.core import (
    Frame,
    StorageConfig,
    StorageEngine,
    WriteBatch,
    make_plugin_manager,
    open_storage,
)
from atoll.replication import Entry, EntryKind, WriteBackEngine
from atoll.replication._host import BATCH_FRAME, RaftHost
from atoll.storage.memory import MemoryEngine
from atoll.testing import MemoryNetwork
from atoll.transport.memory import MemoryTransport

# ---------------------------------------------------------------- the buffer alone

_keys = st.binary(min_size=1, max_size=2).map(lambda b: b[:1] if b[0] % 2 else b)
_ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(["a", "b"]), _keys, st.binary(max_size=3)),
    st.tuples(st.just("delete"), st.sampled_from(["a", "b"]), _keys, st.just(b"")),
    st.tuples(st.just("range"), st.sampled_from(["a", "b"]), _keys, _keys),
    st.tuples(st.just("stage"), st.just(""), st.just(b""), st.just(b"")),
    st.tuples(st.just("take"), st.just(""), st.just(b""), st.just(b"")),
    st.tuples(st.just("flush"), st.just(""), st.just(b""), st.just(b"")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ops, max_size=60), st.lists(_keys, min_size=2, max_size=4))
def test_reads_through_the_buffer_match_a_model(ops: list[Any], bounds: list[bytes]) -> None:
    engine = MemoryEngine(StorageConfig(backend="memory"))
    for ns in ("a", "b"):
        engine.create_namespace(ns)
    wb = WriteBackEngine(engine)
    model: dict[str, dict[bytes, bytes]] = {"a": {}, "b": {}}
    batch = WriteBatch()
    taken: list[tuple[WriteBatch, int]] = []

    def check() -> None:
        for ns in ("a", "b"):
            m = model[ns]
            for k in set(m) | set(bounds):
                assert wb.get(ns, k) == m.get(k)
            lo, hi = sorted(bounds[:2])
            want = sorted((k, v) for k, v in m.items() if lo <= k < hi)
            assert list(wb.scan(ns, lo, hi)) == want
            assert list(wb.scan(ns, lo, hi, reverse=True)) == want[::-1]
            assert list(wb.scan(ns, None, None, limit=2)) == sorted(m.items())[:2]
            assert list(wb.scan(ns, reverse=True, limit=1)) == sorted(m.items())[::-1][:1]

    for op, ns, a, b in ops:
        if op == "put":
            batch.put(ns, a, b)
            model[ns][a] = b
        elif op == "delete":
            batch.delete(ns, a)
            model[ns].pop(a, None)
        elif op == "range":
            lo, hi = sorted((a, b))
            if lo == hi:
                continue
            batch.delete_range(ns, lo, hi)
            for k in [k for k in model[ns] if lo <= k < hi]:
                del model[ns][k]
        elif op == "stage":
            wb.stage(batch)
            batch = WriteBatch()
        elif op == "take":
            taken.append(wb.take())
        elif taken:  # flush the oldest taken batch, as the host does, in order
            done, mark = taken.pop(0)
            engine.write(done)
            wb.flushed(mark)
        if op in ("stage", "take", "flush") and not batch:
            check()  # everything in the model is staged (or written) by now
    wb.stage(batch)
    check()
    for done, mark in taken:
        engine.write(done)
        wb.flushed(mark)
    check()
    final, mark = wb.take()
    engine.write(final)
    wb.flushed(mark)
    assert not wb.unflushed
    for ns in ("a", "b"):
        assert dict(engine.scan(ns)) == model[ns]  # the engine alone holds it all now
        assert wb.snapshot().scan(ns) is not None


def test_a_snapshot_is_refused_while_writes_are_staged() -> None:
    engine = MemoryEngine(StorageConfig(backend="memory"))
    engine.create_namespace("a")
    wb = WriteBackEngine(engine)
    wb.stage(WriteBatch().put("a", b"k", b"v"))
    with pytest.raises(RuntimeError, match="staged"):
        wb.snapshot()
    with pytest.raises(ValueError):
        wb.write(WriteBatch(), sync=True)
    batch, mark = wb.take()
    assert wb.get("a", b"k") == b"v" and engine.get("a", b"k") is None
    engine.write(batch)
    wb.flushed(mark)
    wb.flushed(mark)  # twice is harmless
    with wb.snapshot() as snap:
        assert snap.get("a", b"k") == b"v"


# ------------------------------------------------------------ through the host

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class BufferedSM:
    """Records every applied entry of its group, reading and writing through a
    write-back buffer (``state_engine``)."""

    def __init__(self, wb: WriteBackEngine, group: int) -> None:
        self.state_engine = wb
        self.group = group
        wb.create_namespace("t")
        self._applied_key = struct.pack(">IQ", group, 0)

    def applied_index(self) -> int:
        raw = self.state_engine.get("t", self._applied_key)
        return struct.unpack(">Q", raw)[0] if raw else 0

    def apply(self, entries: Sequence[Entry], batch: WriteBatch) -> list[Any]:
        for e in entries:
            if e.kind is EntryKind.NORMAL and e.data:
                batch.put("t", struct.pack(">IQ", self.group, e.index), e.data)
        batch.put("t", self._applied_key, struct.pack(">Q", entries[-1].index))
        return [e.index for e in entries]

    def _range(self) -> tuple[bytes, bytes]:
        return struct.pack(">IQ", self.group, 1), struct.pack(">IQ", self.group + 1, 0)

    def values(self, engine: Any = None) -> list[bytes]:
        lo, hi = self._range()
        return [v for _, v in (engine or self.state_engine).scan("t", lo, hi)]

    def snapshot(self) -> bytes:
        raise AssertionError("the host uses snapshot_at")

    def snapshot_at(self, view: Any) -> bytes:
        lo, hi = self._range()
        return b"\n".join(v for _, v in view.scan("t", lo, hi))

    def restore(self, data: bytes, batch: WriteBatch) -> None:
        raise AssertionError("not expected in these tests")


def _lmdb(path: Path) -> StorageEngine:
    module = __import__("atoll.storage.lmdb._plugin", fromlist=["_plugin"])
    pm = make_plugin_manager([module], load_entry_points=False)
    return open_storage(pm, StorageConfig(backend="lmdb", sync=True), str(path))


class Node:
    def __init__(self, host: RaftHost, transport: MemoryTransport, sm: BufferedSM) -> None:
        self.host, self.transport, self.sm = host, transport, sm
        self.scope = anyio.CancelScope()


async def _start(
    tg: Any, net: MemoryNetwork, nid: str, ids: list[str], engine: StorageEngine, **kw: Any
) -> Node:
    wb = WriteBackEngine(engine)
    t = MemoryTransport(net, nid)
    host = RaftHost(nid, engine, t, lambda p: p, tick_seconds=0.01, write_back=wb, **kw)

    async def handler(frame: Frame, sender: str) -> Frame | None:
        if frame.type == BATCH_FRAME:
            await host.handle_frame(frame, sender)
        return None

    await t.start(handler)
    sm = BufferedSM(wb, 3)
    g = host.add_group(3, ids, sm)
    assert g.deferred
    node = Node(host, t, sm)

    async def run(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        with node.scope:
            await host.run(task_status=task_status)

    await tg.start(run)
    return node


async def _wait_for(cond: Any, timeout: float = 10.0) -> Any:
    with anyio.fail_after(timeout):
        while not (v := cond()):
            await anyio.sleep(0.005)
        return v


def _leader(nodes: dict[str, Node]) -> Node | None:
    leaders = [n for n in nodes.values() if n.host.groups[3].is_leader]
    return leaders[0] if len(leaders) == 1 else None


@pytest.mark.anyio
async def test_applied_state_is_read_from_the_buffer_and_rebuilt_from_the_log_after_a_crash(
    tmp_path: Path,
) -> None:
    ids = ["a", "b", "c"]
    net = MemoryNetwork()
    engines = {n: _lmdb(tmp_path / n) for n in ids}
    async with anyio.create_task_group() as tg:
        # Never written back on its own: only a close or a snapshot would write it.
        nodes = {n: await _start(tg, net, n, ids, engines[n], write_back_ticks=10**9) for n in ids}
        leader = await _wait_for(lambda: _leader(nodes))
        for i in range(10):
            await leader.host.groups[3].propose(b"%d" % i, timeout=5)
        want = [b"%d" % i for i in range(10)]
        await _wait_for(lambda: all(n.sm.values() == want for n in nodes.values()))
        for n in ids:
            assert nodes[n].sm.values(engines[n]) == []  # staged, not in the engine
            assert nodes[n].host.stats["write_backs"] == 0
        # A crash: the hosts stop without closing, the buffers are lost.
        for n in ids:
            nodes[n].scope.cancel()
            await nodes[n].transport.close()
            engines[n].close()
        engines = {n: _lmdb(tmp_path / n) for n in ids}
        nodes = {n: await _start(tg, net, n, ids, engines[n]) for n in ids}
        # The log was durable: every committed entry is applied again from it, and
        # written back within a tick.
        await _wait_for(lambda: all(n.sm.values() == want for n in nodes.values()))
        await _wait_for(lambda: all(nodes[n].sm.values(engines[n]) == want for n in ids))
        leader = await _wait_for(lambda: _leader(nodes))
        await leader.host.groups[3].propose(b"10", timeout=5)
        await _wait_for(lambda: all(n.sm.values()[-1:] == [b"10"] for n in nodes.values()))
        # A clean stop writes what is staged.
        for n in ids:
            await nodes[n].host.close()
            nodes[n].scope.cancel()
            await nodes[n].transport.close()
            assert nodes[n].sm.values(engines[n]) == [*want, b"10"]
        for n in ids:
            engines[n].close()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_the_buffer_is_written_out_before_a_snapshot_compacts_the_log(
    tmp_path: Path,
) -> None:
    ids = ["a", "b", "c"]
    net = MemoryNetwork()
    engines = {n: _lmdb(tmp_path / n) for n in ids}
    async with anyio.create_task_group() as tg:
        kw = {"write_back_ticks": 10**9, "snapshot_interval_entries": 10}
        nodes = {n: await _start(tg, net, n, ids, engines[n], **kw) for n in ids}
        leader = await _wait_for(lambda: _leader(nodes))
        for i in range(25):
            await leader.host.groups[3].propose(b"%d" % i, timeout=5)
        want = [b"%d" % i for i in range(25)]
        await _wait_for(lambda: all(n.sm.values() == want for n in nodes.values()))
        # Compacted at a snapshot: the engine held the applied state at that point.
        await _wait_for(
            lambda: all(n.host.groups[3].storage.first_index() > 1 for n in nodes.values())
        )
        for n in ids:
            first = nodes[n].host.groups[3].storage.first_index()
            assert nodes[n].host.stats["write_backs"] >= 1
            raw = engines[n].get("t", struct.pack(">IQ", 3, 0))
            assert raw is not None
            assert struct.unpack(">Q", raw)[0] >= first - 1  # no gap before the log
        # Crash and restart: what the engine lacks is still in the log.
        for n in ids:
            nodes[n].scope.cancel()
            await nodes[n].transport.close()
            engines[n].close()
        engines = {n: _lmdb(tmp_path / n) for n in ids}
        nodes = {n: await _start(tg, net, n, ids, engines[n]) for n in ids}
        await _wait_for(lambda: all(n.sm.values() == want for n in nodes.values()))
        for n in ids:
            await nodes[n].host.close()
            nodes[n].scope.cancel()
            await nodes[n].transport.close()
            engines[n].close()
        tg.cancel_scope.cancel()


class HoldingEngine:
    """Wraps an engine; while ``hold`` is set, an unsynced write of Raft state without
    log entries (a cycle that only advanced the commit index) blocks until ``release``."""

    def __init__(self, inner: StorageEngine) -> None:
        self._inner = inner
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held = threading.Event()

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        spaces = {ns for _, ns, _, _ in batch.ops}
        if self.hold.is_set() and not sync and "raft_state" in spaces and "raft_log" not in spaces:
            self.held.set()
            self.release.wait(10)
        self._inner.write(batch, sync=sync)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.anyio
async def test_reads_see_staged_applies_without_waiting_for_the_cycles_write(
    tmp_path: Path,
) -> None:
    ids = ["a", "b", "c"]
    net = MemoryNetwork()
    inner = {n: MemoryEngine(StorageConfig(backend="memory")) for n in ids}
    engines = {n: HoldingEngine(inner[n]) for n in ids}
    async with anyio.create_task_group() as tg:
        nodes = {n: await _start(tg, net, n, ids, engines[n]) for n in ids}  # type: ignore[arg-type]
        leader = await _wait_for(lambda: _leader(nodes))
        g = leader.host.groups[3]
        await g.propose(b"x", timeout=5)
        await _wait_for(lambda: all(n.sm.values() == [b"x"] for n in nodes.values()))
        await _wait_for(lambda: leader.host._bg is None)  # settled: no write in flight
        gate = engines[leader.host.node_id]
        gate.hold.set()
        # The entry's own (synced) write goes through; the leader's next cycle applies
        # it, answers it, and its commit-index write is held.
        await g.propose(b"y", timeout=5)
        await _wait_for(gate.held.is_set)
        assert leader.sm.values() == [b"x", b"y"]
        # A linearizable read on the leader needs no write: the apply is staged.
        with anyio.fail_after(2):
            await g.read_barrier(timeout=2)
        gate.release.set()
        for n in nodes.values():
            await n.host.close()
            n.scope.cancel()
            await n.transport.close()
        tg.cancel_scope.cancel()
