"""EngineLogStorage: the in-memory tail must always agree with what is on disk."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.core import WriteBatch
from atoll.replication import ConfState, Entry, Snapshot, SnapshotMeta
from atoll.replication import _engine_log as engine_log
from atoll.replication._engine_log import EngineLogStorage
from atoll.storage.memory import MemoryEngine

# (kind, a, b): append `a` entries starting `b` back from last+1; compact to `a`% of the
# log; restore a snapshot `a` entries past the end.
_ops = st.lists(
    st.tuples(
        st.sampled_from(["append", "append", "append", "compact", "restore"]),
        st.integers(0, 40),
        st.integers(0, 12),
    ),
    max_size=40,
)


def _check(engine: MemoryEngine, log: EngineLogStorage) -> None:
    fresh = EngineLogStorage(engine, log.group_id)  # reads everything from the engine
    assert (fresh.first_index(), fresh.last_index()) == (log.first_index(), log.last_index())
    lo, hi = log.first_index(), log.last_index() + 1
    if lo < hi:
        assert log.entries(lo, hi) == fresh.entries(lo, hi)
        for i in range(lo, hi):
            assert log.term(i) == fresh.term(i)
        mid = (lo + hi) // 2
        assert log.entries(mid, hi, max_bytes=1) == fresh.entries(mid, hi, max_bytes=1)
    assert log.term(lo - 1) == fresh.term(lo - 1)


@settings(max_examples=150, deadline=None)
@given(ops=_ops, tail_entries=st.sampled_from([4, 16, 8192]))
def test_tail_cache_matches_the_engine(ops: list[tuple[str, int, int]], tail_entries: int) -> None:
    saved = engine_log._TAIL_ENTRIES
    engine_log._TAIL_ENTRIES = tail_entries
    try:
        engine = MemoryEngine()
        log = EngineLogStorage(engine, 7)
        term = 1
        for kind, a, b in ops:
            last = log.last_index()
            if kind == "append" and a:
                term += 1
                start = max(log.first_index(), last + 1 - b)
                entries = tuple(
                    Entry(i, term, bytes([i % 251]) * (i % 5)) for i in range(start, start + a)
                )
                batch = WriteBatch()
                log.stage(batch, hard_state=None, entries=entries, snapshot=None)
                engine.write(batch, sync=False)
                log.commit_staged()
            elif kind == "compact" and last >= log.first_index():
                to = log.first_index() + (last - log.first_index()) * a // 40
                meta = SnapshotMeta(to, log.term(to), ConfState(voters=frozenset({"a"})))
                batch = WriteBatch()
                log.stage_compaction(batch, meta, b"snap", to)
                engine.write(batch, sync=False)
                # Written, not yet committed: what the old first index promises is
                # still readable (a follower may be sent it meanwhile).
                old_first = log.first_index()
                if old_first <= last:
                    assert [e.index for e in log.entries(old_first, last + 1)] == list(
                        range(old_first, last + 1)
                    )
                    assert log.term(old_first) >= 1
                log.commit_staged()
                if b % 2:
                    cleanup = WriteBatch()
                    log.stage_log_cleanup(cleanup)
                    engine.write(cleanup, sync=False)
            elif kind == "restore":
                term += 1
                meta = SnapshotMeta(last + a + 1, term, ConfState(voters=frozenset({"a"})))
                batch = WriteBatch()
                log.stage(batch, hard_state=None, entries=(), snapshot=Snapshot(meta, b"s"))
                engine.write(batch, sync=False)
                log.commit_staged()
            _check(engine, log)
    finally:
        engine_log._TAIL_ENTRIES = saved


def test_a_snapshot_is_its_data_with_its_own_metadata_while_a_compaction_lands() -> None:
    """The host awaits a compaction's write before it calls ``commit_staged``; a
    snapshot read in between (a follower needs one) must not pair the new data with the
    old metadata held in memory. Chaos found this: a follower installed index 1204's
    metadata with index 1605's state and could not restart."""
    engine = MemoryEngine()
    log = EngineLogStorage(engine, 3)
    cs = ConfState(voters=frozenset({"a", "b", "c"}))
    batch = WriteBatch()
    log.stage(
        batch,
        hard_state=None,
        entries=tuple(Entry(i, 1, b"e") for i in range(1, 31)),
        snapshot=None,
    )
    engine.write(batch)
    log.commit_staged()
    for index, state in ((10, b"state at 10"), (20, b"state at 20")):
        batch = WriteBatch()
        log.stage_compaction(batch, SnapshotMeta(index, 1, cs), state, index)
        engine.write(batch)  # landed; commit_staged() not called yet
        snap = log.snapshot()
        assert (snap.meta.index, snap.data) == (index, state)
        log.commit_staged()
        assert log.snapshot() == Snapshot(SnapshotMeta(index, 1, cs), state)
