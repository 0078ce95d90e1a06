"""The Raft WAL: replay equals what was written, torn tails, corruption, segments, and
the ordering of the writes it shares with the node's engine."""

from __future__ import annotations

import errno
import os
import random
import struct
import threading
from pathlib import Path

import pytest
from host_harness import open_engine

from atoll.core import CorruptData, DiskFull, StorageError, WriteBatch
from atoll.core.storagekit import OP_DELETE_RANGE, OP_PUT
from atoll.replication import EngineLogStorage, Entry, EntryKind, HardState, RaftWal, WalEngine
from atoll.replication._engine_log import NS_LOG, NS_STATE

_GI = struct.Struct(">QQ")
END = (1 << 64) - 1


def put(g: int, i: int, v: bytes) -> tuple[int, str, bytes, bytes]:
    return (OP_PUT, NS_LOG, _GI.pack(g, i), v)


def delete(g: int, lo: int, hi: int | None = None) -> tuple[int, str, bytes, bytes]:
    end = _GI.pack(g + 1, 0) if hi is None else _GI.pack(g, hi)
    return (OP_DELETE_RANGE, NS_LOG, _GI.pack(g, lo), end)


def hs(g: int, v: bytes) -> tuple[int, str, bytes, bytes]:
    return (OP_PUT, NS_STATE, struct.pack(">Q", g) + b"h", v)


class Model:
    """What the WAL must hold: each group's contiguous log and hard state."""

    def __init__(self) -> None:
        self.logs: dict[int, dict[int, bytes]] = {}
        self.hs: dict[int, bytes] = {}

    def apply(self, ops: list[tuple[int, str, bytes, bytes]]) -> None:
        for kind, ns, k, v in ops:
            if ns == NS_STATE:
                self.hs[struct.unpack(">Q", k[:8])[0]] = v
                continue
            g, i = _GI.unpack(k)
            log = self.logs.setdefault(g, {})
            if kind == OP_PUT:
                if log and i < min(log):
                    log.clear()
                for j in [j for j in log if j >= i]:
                    del log[j]
                log[i] = v
            else:
                g2, hi = _GI.unpack(v)
                top = END if g2 != g else hi
                for j in [j for j in log if i <= j < top]:
                    del log[j]


def check(wal: RaftWal, model: Model) -> None:
    for g, log in model.logs.items():
        got = dict(wal.entries(g, 0, END))
        assert got == log, g
        if log:
            assert wal.bounds(g) == (min(log), max(log))
            last = wal.entries(g, 0, END, reverse=True, limit=1)
            assert last == [(max(log), log[max(log)])]
        else:
            assert wal.bounds(g) is None
    for g, v in model.hs.items():
        assert wal.hard_state(g) == v


def random_ops(rng: random.Random, model: Model) -> list[tuple[int, str, bytes, bytes]]:
    """One write's ops, shaped as the Raft host makes them (per group: maybe a
    truncation or wipe, appended entries, a hard state; sometimes a compaction)."""
    ops: list[tuple[int, str, bytes, bytes]] = []
    for g in rng.sample(range(1, 6), rng.randint(1, 3)):
        log = model.logs.get(g, {})
        lo, hi = (min(log), max(log)) if log else (0, 0)
        r = rng.random()
        if log and r < 0.08:
            ops.append(delete(g, 0))  # a snapshot install wipes the log
            start = hi + rng.randint(1, 50)
        elif log and r < 0.2:
            cut = rng.randint(lo, hi)
            ops.append(delete(g, 0, cut))  # compaction: the prefix goes
            start = hi + 1
        elif log and r < 0.35:
            start = rng.randint(lo, hi)  # a new leader overwrites a suffix
            ops.append(delete(g, start, hi + 1))
        else:
            start = hi + 1 if log else rng.randint(1, 100)
        for i in range(rng.randint(0, 6)):
            ops.append(put(g, start + i, rng.randbytes(rng.randint(0, 300))))
        if rng.random() < 0.7:
            ops.append(hs(g, b'{"t":%d}' % rng.randint(1, 9)))
    return ops


@pytest.mark.parametrize("seed", range(12))
def test_replay_after_any_write_equals_the_model(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    model = Model()
    wal = RaftWal(str(tmp_path), segment_bytes=4096, max_segments=3)
    purged = 0
    for step in range(300):
        ops = random_ops(rng, model)
        wal.write(ops, sync=rng.random() < 0.5)
        model.apply(ops)
        check(wal, model)
        if step % 37 == 0:
            purged += wal.stats["purged"]
            wal.close()
            wal = RaftWal(str(tmp_path), segment_bytes=4096, max_segments=3)
            check(wal, model)
    purged += wal.stats["purged"]
    wal.close()
    wal = RaftWal(str(tmp_path), segment_bytes=4096, max_segments=3)
    check(wal, model)
    # Segments nothing lives in go at the next rotation: at most one is left over.
    assert purged > 0
    assert wal.segments[0] >= wal._oldest_needed() - 1
    wal.close()


def test_cold_groups_are_rewritten_so_old_segments_go(tmp_path: Path) -> None:
    wal = RaftWal(str(tmp_path), segment_bytes=4096, max_segments=2)
    model = Model()
    cold = [put(9, 1, b"cold"), put(9, 2, b"data"), hs(9, b'{"t":1}')]
    wal.write(cold, sync=True)
    model.apply(cold)
    for i in range(1, 200):  # a busy group compacts as it goes
        ops = [put(1, i, b"x" * 100)]
        if i % 20 == 0:
            ops.append(delete(1, 0, i - 5))
        wal.write(ops, sync=False)
        model.apply(ops)
    assert wal.stats["rewritten_entries"] >= 2
    assert len(wal.segments) <= 3
    wal.close()
    wal = RaftWal(str(tmp_path), segment_bytes=4096, max_segments=2)
    check(wal, model)
    wal.close()


def test_a_gap_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    wal = RaftWal(str(tmp_path))
    wal.write([put(1, 5, b"a"), put(1, 6, b"b")], sync=True)
    size = os.path.getsize(tmp_path / "0000000000000001.wal")
    with pytest.raises(StorageError, match="gap"):
        wal.write([put(1, 9, b"c")], sync=True)
    with pytest.raises(StorageError, match="gap"):
        wal.write([delete(1, 5, 6), put(1, 8, b"x")], sync=True)
    assert os.path.getsize(tmp_path / "0000000000000001.wal") == size
    assert wal.entries(1, 0, END) == [(5, b"a"), (6, b"b")]
    wal.close()


def _segment(tmp_path: Path) -> Path:
    (seg,) = sorted(tmp_path.glob("*.wal"))
    return seg


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_a_torn_last_record_is_dropped_and_writing_goes_on(tmp_path: Path, cut: int) -> None:
    wal = RaftWal(str(tmp_path))
    wal.write([put(1, 1, b"kept"), hs(1, b"h1")], sync=True)
    wal.write([put(1, 2, b"torn" * 10), hs(1, b"h2")], sync=True)
    wal.close()
    seg = _segment(tmp_path)
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) - cut])  # the crash cut the last write short
    wal = RaftWal(str(tmp_path))
    assert wal.entries(1, 0, END) == [(1, b"kept")]
    assert wal.hard_state(1) == b"h1"
    assert wal.stats["torn_bytes_dropped"] > 0
    wal.write([put(1, 2, b"again")], sync=True)
    wal.close()
    wal = RaftWal(str(tmp_path))
    assert wal.entries(1, 0, END) == [(1, b"kept"), (2, b"again")]
    wal.close()


def test_zeros_after_the_last_record_are_a_torn_tail(tmp_path: Path) -> None:
    wal = RaftWal(str(tmp_path))
    wal.write([put(1, 1, b"kept")], sync=True)
    wal.close()
    seg = _segment(tmp_path)
    seg.write_bytes(seg.read_bytes() + b"\0" * 100)
    wal = RaftWal(str(tmp_path))
    assert wal.entries(1, 0, END) == [(1, b"kept")]
    wal.close()


def test_a_damaged_record_before_the_tail_is_corrupt_data(tmp_path: Path) -> None:
    wal = RaftWal(str(tmp_path))
    wal.write([put(1, 1, b"first value")], sync=True)
    wal.write([put(1, 2, b"second value")], sync=True)
    wal.close()
    seg = _segment(tmp_path)
    data = bytearray(seg.read_bytes())
    data[data.index(b"first value")] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptData, match=r"0000000000000001\.wal.*checksum"):
        RaftWal(str(tmp_path))


def test_a_bad_header_is_corrupt_data(tmp_path: Path) -> None:
    (tmp_path / "0000000000000001.wal").write_bytes(b"NOTAWAL!" + bytes(8) + b"x" * 40)
    with pytest.raises(CorruptData, match="header"):
        RaftWal(str(tmp_path))


def test_a_full_disk_leaves_no_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = RaftWal(str(tmp_path))
    wal.write([put(1, 1, b"a")], sync=True)
    real_write = os.write
    calls = {"n": 0}

    def short_then_full(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:5])  # part of the record lands
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(DiskFull, match="disk full"):
        wal.write([put(1, 2, b"b")], sync=True)
    monkeypatch.setattr(os, "write", real_write)
    wal.write([put(1, 2, b"b")], sync=True)  # the host retries the same batch
    wal.close()
    wal = RaftWal(str(tmp_path))
    assert wal.entries(1, 0, END) == [(1, b"a"), (2, b"b")]
    wal.close()


def test_a_read_does_not_wait_for_a_writers_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop reads entries beyond the in-memory tail (a lagging follower):
    that read must not stall behind the writer thread's fdatasync."""
    wal = RaftWal(str(tmp_path))
    wal.write([put(1, 1, b"old"), hs(1, b"h1")], sync=True)
    in_sync, release = threading.Event(), threading.Event()
    real_fdatasync = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        in_sync.set()
        assert release.wait(10)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    writer = threading.Thread(target=lambda: wal.write([put(1, 2, b"new")], sync=True))
    writer.start()
    try:
        assert in_sync.wait(10)
        # The writer is inside its fsync: reads answer from what is durable.
        assert wal.entries(1, 0, END) == [(1, b"old")]
        assert wal.hard_state(1) == b"h1"
    finally:
        release.set()
        writer.join(10)
    assert wal.entries(1, 0, END) == [(1, b"old"), (2, b"new")]
    monkeypatch.undo()
    wal.close()


# ---------------------------------------------------------------------- WalEngine


def reopen(backend: str, tmp_path: Path) -> WalEngine:
    """The engine at ``tmp_path/db`` with its Raft log in ``db/raftwal``."""
    engine = open_engine(backend, tmp_path / "db", wal=True)
    assert isinstance(engine, WalEngine)
    return engine


def _log_storage_view(engine: WalEngine, g: int) -> tuple[HardState, list[Entry], int]:
    s = EngineLogStorage(engine, g)
    entries = (
        s.entries(s.first_index(), s.last_index() + 1) if s.last_index() >= s.first_index() else []
    )
    return s.hard_state, entries, s.first_index()


def _stage(engine: WalEngine, g: int, **kw: object) -> None:
    s = EngineLogStorage(engine, g)
    batch = WriteBatch()
    s.stage(batch, **kw)  # type: ignore[arg-type]
    engine.write(batch, sync=True)
    s.commit_staged()


def _entries(lo: int, hi: int, term: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(i, term, b"e%d" % i, EntryKind.NORMAL) for i in range(lo, hi))


@pytest.mark.parametrize("backend", ["memory", "lmdb"])
def test_the_log_and_hard_state_live_in_the_wal_and_the_rest_in_the_engine(
    tmp_path: Path, backend: str
) -> None:
    engine = reopen(backend, tmp_path)
    _stage(engine, 3, hard_state=HardState(2, "a", 4), entries=_entries(1, 6), snapshot=None)
    batch = WriteBatch().put("t", b"k", b"v")
    engine.create_namespace("t")
    engine.write(batch, sync=True)
    assert engine.inner.get("t", b"k") == b"v"
    assert not list(engine.inner.scan(NS_LOG))
    assert engine.inner.get(NS_STATE, struct.pack(">Q", 3) + b"h") is None
    hs_, entries, _ = _log_storage_view(engine, 3)
    assert hs_ == HardState(2, "a", 4) and [e.index for e in entries] == [1, 2, 3, 4, 5]
    if backend == "lmdb":
        engine.close()
        engine = reopen(backend, tmp_path)
        hs_, entries, _ = _log_storage_view(engine, 3)
        assert hs_ == HardState(2, "a", 4) and entries == list(_entries(1, 6))
    engine.close()


def test_a_crash_between_a_snapshot_installs_two_writes_leaves_no_stale_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atoll.replication import ConfState, Snapshot, SnapshotMeta

    engine = reopen("lmdb", tmp_path)
    _stage(engine, 1, hard_state=HardState(1, "a", 3), entries=_entries(1, 11), snapshot=None)
    snap = Snapshot(SnapshotMeta(5, 2, ConfState(voters=frozenset({"a"}))), b"state")
    order: list[str] = []
    real_inner = engine.inner.write

    def inner_write(batch: WriteBatch, *, sync: bool | None = None) -> None:
        order.append("engine")
        real_inner(batch, sync=sync)

    def wal_crash(*a: object, **k: object) -> None:
        order.append("wal")
        raise OSError("the process died here")

    monkeypatch.setattr(engine.inner, "write", inner_write)
    monkeypatch.setattr(engine.wal, "write", wal_crash)
    with pytest.raises(OSError):
        _stage(engine, 1, hard_state=HardState(2, "", 5), entries=(), snapshot=snap)
    assert order == ["engine", "wal"]  # the restored state first
    monkeypatch.undo()
    engine.close()
    engine = reopen("lmdb", tmp_path)
    hs_, entries, first = _log_storage_view(engine, 1)
    # The snapshot's state and an empty log after it: entries 6..10 of term 1 are gone.
    assert first == 6 and entries == []
    assert hs_ == HardState(2, "", 5)
    assert EngineLogStorage(engine, 1).snapshot().data == b"state"
    # The log goes on from the snapshot.
    _stage(engine, 1, hard_state=None, entries=_entries(6, 8, term=2), snapshot=None)
    engine.close()
    engine = reopen("lmdb", tmp_path)
    assert _log_storage_view(engine, 1)[1] == list(_entries(6, 8, term=2))
    engine.close()


def test_dropping_a_log_prefix_syncs_the_engine_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = reopen("memory", tmp_path)
    _stage(engine, 1, hard_state=None, entries=_entries(1, 11), snapshot=None)
    order: list[str] = []
    real_sync, real_wal = engine.inner.sync, engine.wal.write
    monkeypatch.setattr(engine.inner, "sync", lambda: (order.append("engine sync"), real_sync()))
    monkeypatch.setattr(
        engine.wal, "write", lambda ops, **k: (order.append("wal"), real_wal(ops, **k))
    )
    engine.write(WriteBatch().delete_range(NS_LOG, _GI.pack(1, 0), _GI.pack(1, 6)), sync=False)
    assert order == ["engine sync", "wal"]
    engine.write(WriteBatch().put(NS_LOG, _GI.pack(1, 11), b"x"), sync=True)
    assert order == ["engine sync", "wal", "wal"]  # appends need no engine sync
    engine.close()


def test_a_log_kept_in_the_engine_moves_into_the_wal(tmp_path: Path) -> None:
    inner = open_engine("lmdb", tmp_path / "db")
    log = EngineLogStorage(inner, 2)
    batch = WriteBatch()
    log.stage(batch, hard_state=HardState(3, "b", 7), entries=_entries(1, 9), snapshot=None)
    inner.write(batch, sync=True)
    inner.close()
    engine = reopen("lmdb", tmp_path)
    hs_, entries, _ = _log_storage_view(engine, 2)
    assert hs_ == HardState(3, "b", 7) and entries == list(_entries(1, 9))
    assert not list(engine.inner.scan(NS_LOG))
    assert engine.inner.get(NS_STATE, struct.pack(">Q", 2) + b"h") is None
    engine.close()
    engine = reopen("lmdb", tmp_path)
    assert _log_storage_view(engine, 2)[1] == list(_entries(1, 9))
    engine.close()
