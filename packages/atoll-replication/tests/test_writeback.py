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
import orjson
import pytest
from host_harness import LogSM, WrappedEngine, open_engine, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.core import (
    OP_DELETE,
    OP_DELETE_RANGE,
    OP_PUT,
    Frame,
    StorageConfig,
    StorageEngine,
    WriteBatch,
)
from atoll.replication import Entry, EntryKind, WalEngine, WriteBackEngine
from atoll.replication._host import BATCH_FRAME, RaftHost
from atoll.storage.memory import MemoryEngine
from atoll.testing import MemoryNetwork, apply_ops, batch_op, scan_model
from atoll.transport.memory import MemoryTransport

# ---------------------------------------------------------------- the buffer alone

_step = st.one_of(
    st.lists(batch_op, min_size=1, max_size=6),  # a batch, staged at once
    st.just("take"),
    st.just("flush"),
)
_bounds = st.none() | st.binary(min_size=1, max_size=2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, max_size=30), _bounds, _bounds, st.none() | st.integers(0, 3))
def test_reads_through_the_buffer_match_a_model(
    steps: list[Any], start: bytes | None, end: bytes | None, limit: int | None
) -> None:
    engine = MemoryEngine(StorageConfig(backend="memory"))
    for ns in ("a", "b"):
        engine.create_namespace(ns)
    wb = WriteBackEngine(engine)
    model: dict[str, dict[bytes, bytes]] = {"a": {}, "b": {}}
    taken: list[tuple[WriteBatch, int]] = []
    touched: set[bytes] = set()

    def check() -> None:
        for ns in ("a", "b"):
            for k in touched:
                assert wb.get(ns, k) == model[ns].get(k)
            for reverse in (False, True):
                got = list(wb.scan(ns, start, end, reverse=reverse, limit=limit))
                assert got == scan_model(model[ns], start, end, reverse, limit)

    def flush_oldest() -> None:  # as the host does: in the order they were taken
        done, mark = taken.pop(0)
        engine.write(done)
        wb.flushed(mark)

    for step in steps:
        if step == "take":
            taken.append(wb.take())
        elif step == "flush":
            if taken:
                flush_oldest()
        else:
            wb.stage(apply_ops(model, step))
            for kind, _, a, b in step:
                touched.update((a, b) if kind == "delete_range" else (a,))
        check()
    while taken:
        flush_oldest()
        check()
    final, mark = wb.take()
    engine.write(final)
    wb.flushed(mark)
    assert not wb.unflushed
    check()
    for ns in ("a", "b"):
        assert dict(engine.scan(ns)) == model[ns]  # the engine alone holds it all now


def test_a_staged_range_delete_hides_written_keys_until_a_later_put() -> None:
    engine = MemoryEngine(StorageConfig(backend="memory"))
    engine.create_namespace("a")
    wb = WriteBackEngine(engine)
    wb.stage(WriteBatch().put("a", b"k1", b"1").put("a", b"k2", b"2").put("a", b"z", b"z"))
    batch, mark = wb.take()
    engine.write(batch)
    wb.flushed(mark)  # all three are in the engine, none staged
    wb.stage(WriteBatch().delete_range("a", b"k", b"l").put("a", b"k2", b"new"))
    assert wb.get("a", b"k1") is None
    assert wb.get("a", b"k2") == b"new"
    assert list(wb.scan("a")) == [(b"k2", b"new"), (b"z", b"z")]
    assert list(wb.scan("a", reverse=True, limit=2)) == [(b"z", b"z"), (b"k2", b"new")]
    assert engine.get("a", b"k1") == b"1"  # not written yet


def test_a_take_writes_each_key_once_range_deletes_first_then_puts_then_deletes() -> None:
    """A batch for the engine holds only each key's last staged write since the previous
    take; a write that a later range delete covers is left to the range delete."""
    engine = MemoryEngine(StorageConfig(backend="memory"))
    for ns in ("a", "b"):
        engine.create_namespace(ns)
    wb = WriteBackEngine(engine)
    wb.stage(WriteBatch().put("b", b"m", b"1").put("a", b"r1", b"x").put("a", b"q", b"old"))
    wb.stage(WriteBatch().put("b", b"m", b"2").delete("a", b"r1").delete_range("a", b"q", b"r"))
    wb.stage(WriteBatch().put("b", b"m", b"3").put("a", b"k", b"v"))
    assert wb.pending_ops == 8
    batch, mark = wb.take()
    assert batch.ops == [
        (OP_DELETE_RANGE, "a", b"q", b"r"),
        (OP_PUT, "a", b"k", b"v"),
        (OP_PUT, "b", b"m", b"3"),
        (OP_DELETE, "a", b"r1", b""),
    ]
    assert wb.pending_ops == 0
    wb.stage(WriteBatch().put("b", b"m", b"4"))
    later, later_mark = wb.take()  # only what was staged after the first take
    assert later.ops == [(OP_PUT, "b", b"m", b"4")]
    for done, m in ((batch, mark), (later, later_mark)):
        engine.write(done)
        wb.flushed(m)
    assert not wb.unflushed
    assert dict(engine.scan("a")) == {b"k": b"v"} and dict(engine.scan("b")) == {b"m": b"4"}


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


class BufferedSM(LogSM):
    """A :class:`LogSM` that reads and writes through a write-back buffer (its
    ``state_engine``) and builds snapshots from the host's engine view."""

    @property
    def state_engine(self) -> StorageEngine:
        return self.engine

    def snapshot(self) -> bytes:
        raise AssertionError("the host uses snapshot_at")

    def snapshot_at(self, view: Any) -> bytes:
        return b"\n".join(self.values(view))


class Node:
    def __init__(self, host: RaftHost, transport: MemoryTransport, sm: BufferedSM) -> None:
        self.host, self.transport, self.sm = host, transport, sm
        self.scope = anyio.CancelScope()


async def _start(
    tg: Any,
    net: MemoryNetwork,
    nid: str,
    ids: list[str],
    engine: StorageEngine,
    sm_class: type[BufferedSM] = BufferedSM,
    **kw: Any,
) -> Node:
    wb = WriteBackEngine(engine)
    t = MemoryTransport(net, nid)
    host = RaftHost(nid, engine, t, lambda p: p, tick_seconds=0.01, write_back=wb, **kw)

    async def handler(frame: Frame, sender: str) -> Frame | None:
        if frame.type == BATCH_FRAME:
            await host.handle_frame(frame, sender)
        return None

    await t.start(handler)
    sm = sm_class(wb, 3)  # type: ignore[arg-type]
    g = host.add_group(3, ids, sm)
    assert g.deferred
    node = Node(host, t, sm)

    async def run(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        with node.scope:
            await host.run(task_status=task_status)

    await tg.start(run)
    return node


async def _crash(nodes: dict[str, Node], engines: dict[str, StorageEngine]) -> None:
    """Stop every host without closing it (its buffer is lost), then close the engines."""
    for n, node in nodes.items():
        node.scope.cancel()
        await node.transport.close()
        engines[n].close()


async def _stop(nodes: dict[str, Node]) -> None:
    """Stop every host cleanly (closing it writes its buffer out)."""
    for node in nodes.values():
        await node.host.close()
        node.scope.cancel()
        await node.transport.close()


def _leader(nodes: dict[str, Node]) -> Node | None:
    leaders = [n for n in nodes.values() if n.host.groups[3].is_leader]
    return leaders[0] if len(leaders) == 1 else None


async def _start_all(
    tg: Any, net: MemoryNetwork, engines: dict[str, Any], **kw: Any
) -> dict[str, Node]:
    """A host per engine, all replicas of group 3."""
    ids = list(engines)
    return {n: await _start(tg, net, n, ids, engines[n], **kw) for n in ids}


async def _propose(
    nodes: dict[str, Node], values: list[bytes], proposals: list[bytes] | None = None
) -> Node:
    """Propose ``values`` (or ``proposals``, whose applied values are ``values``) through
    the leader, wait until every node applied them (on top of what it held); returns
    the leader."""
    leader: Node = await wait_for(lambda: _leader(nodes))
    for v in values if proposals is None else proposals:
        await leader.host.groups[3].propose(v, timeout=5)
    await wait_for(lambda: all(n.sm.values()[-len(values) :] == values for n in nodes.values()))
    return leader


@pytest.mark.anyio
@pytest.mark.parametrize("wal", [False, True], ids=["engine-log", "wal"])
async def test_applied_state_is_read_from_the_buffer_and_rebuilt_from_the_log_after_a_crash(
    tmp_path: Path, wal: bool
) -> None:
    ids = ["a", "b", "c"]
    net = MemoryNetwork()
    engines = {n: open_engine("lmdb", tmp_path / n, wal=wal) for n in ids}
    async with anyio.create_task_group() as tg:
        # Never written back on its own: only a close or a snapshot would write it.
        nodes = await _start_all(tg, net, engines, write_back_ticks=10**9, write_back_thread=wal)
        want = [b"%d" % i for i in range(10)]
        await _propose(nodes, want)
        for n in ids:
            assert nodes[n].sm.values(engines[n]) == []  # staged, not in the engine
            assert nodes[n].host.stats["write_backs"] == 0
        await _crash(nodes, engines)
        engines = {n: open_engine("lmdb", tmp_path / n, wal=wal) for n in ids}
        nodes = await _start_all(tg, net, engines, write_back_thread=wal)
        # The log was durable: every committed entry is applied again from it, and
        # written back within a tick.
        await wait_for(lambda: all(n.sm.values() == want for n in nodes.values()))
        await wait_for(lambda: all(nodes[n].sm.values(engines[n]) == want for n in ids))
        await _propose(nodes, [b"10"])
        # A clean stop writes what is staged.
        await _stop(nodes)
        for n in ids:
            assert nodes[n].sm.values(engines[n]) == [*want, b"10"]
            engines[n].close()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("wal", [False, True], ids=["engine-log", "wal"])
async def test_the_buffer_is_written_out_before_a_snapshot_compacts_the_log(
    tmp_path: Path, wal: bool
) -> None:
    ids = ["a", "b", "c"]
    net = MemoryNetwork()
    engines = {n: open_engine("lmdb", tmp_path / n, wal=wal) for n in ids}
    async with anyio.create_task_group() as tg:
        nodes = await _start_all(
            tg,
            net,
            engines,
            write_back_ticks=10**9,
            snapshot_interval_entries=10,
            write_back_thread=wal,
        )
        want = [b"%d" % i for i in range(25)]
        await _propose(nodes, want)
        # Compacted at a snapshot: the engine held the applied state at that point.
        await wait_for(
            lambda: all(n.host.groups[3].storage.first_index() > 1 for n in nodes.values())
        )
        for n in ids:
            first = nodes[n].host.groups[3].storage.first_index()
            assert nodes[n].host.stats["write_backs"] >= 1
            raw = engines[n].get("t", struct.pack(">IQ", 3, 0))
            assert raw is not None
            assert struct.unpack(">Q", raw)[0] >= first - 1  # no gap before the log
        # Crash and restart: what the engine lacks is still in the log.
        await _crash(nodes, engines)
        engines = {n: open_engine("lmdb", tmp_path / n, wal=wal) for n in ids}
        nodes = await _start_all(tg, net, engines)
        await wait_for(lambda: all(n.sm.values() == want for n in nodes.values()))
        await _stop(nodes)
        for e in engines.values():
            e.close()
        tg.cancel_scope.cancel()


class HoldingEngine(WrappedEngine):
    """Wraps an engine; while ``hold`` is set, an unsynced write of Raft state without
    log entries (a cycle that only advanced the commit index) blocks until ``release``."""

    def __init__(self, inner: StorageEngine) -> None:
        super().__init__(inner)
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held = threading.Event()

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        spaces = {ns for _, ns, _, _ in batch.ops}
        if self.hold.is_set() and not sync and "raft_state" in spaces and "raft_log" not in spaces:
            self.held.set()
            self.release.wait(10)
        self._inner.write(batch, sync=sync)


@pytest.mark.anyio
async def test_reads_see_staged_applies_without_waiting_for_the_cycles_write(
    tmp_path: Path,
) -> None:
    ids = ["a", "b", "c"]
    net = MemoryNetwork()
    inner = {n: MemoryEngine(StorageConfig(backend="memory")) for n in ids}
    engines = {n: HoldingEngine(inner[n]) for n in ids}
    async with anyio.create_task_group() as tg:
        nodes = await _start_all(tg, net, engines)
        leader = await _propose(nodes, [b"x"])
        g = leader.host.groups[3]
        await wait_for(lambda: leader.host._bg is None)  # settled: no write in flight
        gate = engines[leader.host.node_id]
        gate.hold.set()
        # The entry's own (synced) write goes through; the leader's next cycle applies
        # it, answers it, and its commit-index write is held.
        await g.propose(b"y", timeout=5)
        await wait_for(gate.held.is_set)
        assert leader.sm.values() == [b"x", b"y"]
        # A linearizable read on the leader needs no write: the apply is staged.
        with anyio.fail_after(2):
            await g.read_barrier(timeout=2)
        gate.release.set()
        await _stop(nodes)
        tg.cancel_scope.cancel()


class KeyedSM(BufferedSM):
    """Commands ``p:<name>`` (set key ``name`` to ``name``) and ``d:<name>`` (delete it),
    through the write-back buffer, with snapshots that restore."""

    def _key(self, name: bytes) -> bytes:
        return struct.pack(">IQ", self.group, 1) + name

    def apply(self, entries: Sequence[Entry], batch: WriteBatch) -> list[Any]:
        for e in entries:
            if e.kind is EntryKind.NORMAL and e.data:
                op, name = e.data[:2], e.data[2:]
                if op == b"p:":
                    batch.put("t", self._key(name), name)
                else:
                    batch.delete("t", self._key(name))
        batch.put("t", self._applied_key, struct.pack(">Q", entries[-1].index))
        return [e.index for e in entries]

    def snapshot_at(self, view: Any) -> bytes:
        lo, hi = struct.pack(">IQ", self.group, 1), struct.pack(">IQ", self.group + 1, 0)
        doc = {
            "applied": (view.get("t", self._applied_key) or b"").hex(),
            "items": [[k.hex(), v.hex()] for k, v in view.scan("t", lo, hi)],
        }
        return orjson.dumps(doc)

    def restore(self, data: bytes, batch: WriteBatch) -> None:
        doc = orjson.loads(data)
        lo, hi = struct.pack(">IQ", self.group, 1), struct.pack(">IQ", self.group + 1, 0)
        batch.delete_range("t", lo, hi)
        for k, v in doc["items"]:
            batch.put("t", bytes.fromhex(k), bytes.fromhex(v))
        batch.put("t", self._applied_key, bytes.fromhex(doc["applied"]))


@pytest.mark.anyio
@pytest.mark.parametrize("wal", [False, True], ids=["engine-log", "wal"])
async def test_a_restored_snapshot_is_not_shadowed_by_older_staged_writes(
    tmp_path: Path, wal: bool
) -> None:
    ids = ["a", "b", "c"]
    net = MemoryNetwork()
    engines: dict[str, Any] = {n: MemoryEngine(StorageConfig(backend="memory")) for n in ids}
    if wal:
        engines = {n: WalEngine(e, str(tmp_path / n / "raftwal")) for n, e in engines.items()}
    async with anyio.create_task_group() as tg:
        nodes = await _start_all(
            tg,
            net,
            engines,
            sm_class=KeyedSM,
            write_back_ticks=10**9,
            snapshot_interval_entries=10,
            write_back_thread=wal,
        )
        leader = await _propose(nodes, [b"x"], proposals=[b"p:x"])
        lagging = next(n for n in ids if nodes[n] is not leader)
        # The lagging follower holds ``x`` staged, not yet written to its engine.
        assert nodes[lagging].sm.values() == [b"x"]
        assert nodes[lagging].sm.values(engines[lagging]) == []
        net.isolate(lagging)
        others = {n: node for n, node in nodes.items() if n != lagging}
        fillers = [b"f%02d" % i for i in range(25)]
        await _propose(others, fillers, proposals=[b"d:x"] + [b"p:" + f for f in fillers])
        g = leader.host.groups[3]
        await wait_for(lambda: g.storage.first_index() > 3)  # compacted past the follower
        net.heal()
        # It catches up through the snapshot, which has no ``x``: the staged ``x`` must
        # neither shadow it nor be written over it afterwards.
        lg = nodes[lagging].host.groups[3]
        await wait_for(lambda: lg.restores > 0)
        await wait_for(lambda: nodes[lagging].sm.values() == fillers)
        await _stop(nodes)
        assert nodes[lagging].sm.values(engines[lagging]) == fillers
        tg.cancel_scope.cancel()


class ThreadRecordingEngine(WrappedEngine):
    """Wraps an engine; records which thread wrote which namespaces."""

    def __init__(self, inner: StorageEngine) -> None:
        super().__init__(inner)
        self.writers: list[tuple[str, frozenset[str]]] = []

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        spaces = frozenset(ns for _, ns, _, _ in batch.ops)
        self.writers.append((threading.current_thread().name, spaces))
        self._inner.write(batch, sync=sync)


@pytest.mark.anyio
async def test_with_write_back_thread_the_buffer_is_written_beside_the_log(
    tmp_path: Path,
) -> None:
    ids = ["a", "b", "c"]
    net = MemoryNetwork()
    engines: dict[str, Any] = {
        n: ThreadRecordingEngine(
            WalEngine(MemoryEngine(StorageConfig(backend="memory")), str(tmp_path / n))
        )
        for n in ids
    }
    async with anyio.create_task_group() as tg:
        nodes = await _start_all(tg, net, engines, write_back_thread=True)
        want = [b"%d" % i for i in range(10)]
        await _propose(nodes, want)
        await wait_for(lambda: all(nodes[n].sm.values(engines[n]) == want for n in ids))
        for n in ids:
            writers = engines[n].writers
            applied = {name for name, spaces in writers if "t" in spaces}
            logged = {name for name, spaces in writers if "raft_log" in spaces}
            assert applied and all(name.startswith("atoll-raft-write-back") for name in applied)
            assert logged and not any(name.startswith("atoll-raft-write-back") for name in logged)
        await _stop(nodes)
        tg.cancel_scope.cancel()
