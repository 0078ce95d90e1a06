"""The key-value state machine: commands, sessions (exactly-once), snapshots."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.coordination import (
    CasCommand,
    CommandResult,
    DeleteCommand,
    KVStateMachine,
    PutCommand,
    WriteBatchCommand,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
)
from atoll.core import InvalidRequest, StorageEngine, WriteBatch

keys = st.binary(min_size=1, max_size=20)
vals = st.binary(max_size=50)
commands = st.one_of(
    st.builds(PutCommand, keys, vals, st.text(max_size=5), st.integers(0, 99), st.integers(0, 9)),
    st.builds(DeleteCommand, keys, st.text(max_size=5), st.integers(0, 99)),
    st.builds(CasCommand, keys, st.none() | vals, st.none() | vals, st.text(max_size=5)),
    st.builds(
        WriteBatchCommand,
        st.lists(st.tuples(keys, st.none() | vals), max_size=4).map(tuple),
        st.text(max_size=5),
        st.integers(0, 99),
    ),
)


@given(commands)
def test_command_encoding_round_trips(cmd: object) -> None:
    assert decode_command(encode_command(cmd)) == cmd  # type: ignore[arg-type]


@given(st.binary(max_size=64))
def test_any_binary_entry_decodes_or_is_invalid_request(tail: bytes) -> None:
    for data in (b"\xff" + tail, b"\xff\x04\x00\x00" + bytes(16) + tail, tail):
        try:
            decode_command(data)
        except InvalidRequest:
            pass


@given(commands)
def test_entries_in_the_earlier_frame_layout_still_decode(cmd: object) -> None:
    """Logs and snapshots written before the binary layout hold frame-encoded commands."""
    from atoll.core import Frame, encode_frame

    c: Any = cmd
    h: dict[str, Any] = {}
    if c.client_id or c.seq or c.acked:
        h = {"c": c.client_id, "s": c.seq, "k": c.acked}
    if isinstance(c, PutCommand):
        old = encode_frame(Frame("put", h, (c.key, c.value)))
    elif isinstance(c, DeleteCommand):
        old = encode_frame(Frame("del", h, (c.key,)))
    elif isinstance(c, CasCommand):
        h.update(e=c.expected is not None, n=c.new is not None)
        old = encode_frame(Frame("cas", h, (c.key, c.expected or b"", c.new or b"")))
    else:
        h["p"] = [0 if v is None else 1 for _, v in c.items]
        old = encode_frame(Frame("batch", h, tuple(x for k, v in c.items for x in (k, v or b""))))
    assert decode_command(old) == c


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00\x00\x00\x01\x01",
        b"not a frame at all",
        b"\xff",
        b"\xff\x09\x00\x00" + bytes(16),  # unknown kind
        b"\xff\x01\x00\x02\xc3\x28" + bytes(16),  # client id is not UTF-8
        b"\xff\x01\x00\x00" + bytes(16) + b"\x00\x00\x00\x09k",  # key past the end
        b"\xff\x04\x00\x00" + bytes(16) + b"\x00\x00\x00\x02",  # batch items missing
        b"\xff\x03\x00\x00" + bytes(16) + b"\x07\x00\x00\x00\x00\x00\x00\x00\x00",
    ],
)
def test_garbage_entry_is_invalid_request(garbage: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_command(garbage)


def _apply(sm: KVStateMachine, part: int, entries: list[tuple[int, bytes]]) -> list[CommandResult]:
    batch = WriteBatch()
    run = sm.begin(part, batch)
    out = [run.apply(i, d) for i, d in entries]
    run.finish()
    sm.engine.write(batch, sync=False)
    return out


def test_put_get_delete_cas_and_batch(engine: StorageEngine) -> None:
    sm = KVStateMachine(engine)
    res = _apply(
        sm,
        3,
        [
            (1, b""),  # leader no-op
            (2, encode_command(PutCommand(b"a", b"1"))),
            (3, encode_command(CasCommand(b"a", b"1", b"2"))),  # sees the put in the overlay
            (4, encode_command(CasCommand(b"a", b"1", b"3"))),  # fails: value is 2
            (5, encode_command(DeleteCommand(b"zz"))),
            (6, encode_command(WriteBatchCommand(((b"b", b"x"), (b"c", b"y"), (b"b", None))))),
        ],
    )
    assert res[2] == CommandResult(ok=True, previous=b"1", existed=True)
    assert res[3] == CommandResult(ok=False, previous=b"2", existed=True)
    assert res[4] == CommandResult(existed=False)
    assert sm.get(3, b"a") == b"2"
    assert sm.get(3, b"b") is None and sm.get(3, b"c") == b"y"
    assert sm.applied_index(3) == 6
    assert sm.get(4, b"a") is None  # partitions are isolated
    assert list(sm.scan(3)) == [(b"a", b"2"), (b"c", b"y")]


def test_replayed_entries_after_restart_are_ignored(engine: StorageEngine) -> None:
    sm = KVStateMachine(engine)
    _apply(sm, 1, [(1, encode_command(PutCommand(b"k", b"v1")))])
    _apply(sm, 1, [(2, encode_command(PutCommand(b"k", b"v2")))])
    res = _apply(sm, 1, [(1, encode_command(PutCommand(b"k", b"OLD")))])
    assert res[0].duplicate
    assert sm.get(1, b"k") == b"v2"


def test_retried_command_applies_once_with_several_in_flight(engine: StorageEngine) -> None:
    sm = KVStateMachine(engine)
    c5 = CasCommand(b"k", None, b"A", client_id="cli", seq=5)
    c6 = PutCommand(b"j", b"B", client_id="cli", seq=6)
    first = _apply(sm, 0, [(1, encode_command(c6)), (2, encode_command(c5))])
    assert first[1].ok
    # The client lost the answers and retries both (re-proposed at new indexes).
    retry = _apply(sm, 0, [(3, encode_command(c5)), (4, encode_command(c6))])
    assert retry[0].duplicate and retry[0].ok  # the cas reports its first outcome
    assert retry[1].duplicate
    # A different cas on the same key by the same client is a new command: fails.
    c7 = CasCommand(b"k", None, b"C", client_id="cli", seq=7, acked=7)
    assert not _apply(sm, 0, [(5, encode_command(c7))])[0].ok
    # Once acked, an old seq is never re-applied even if it shows up again.
    late = _apply(sm, 0, [(6, encode_command(PutCommand(b"k", b"LATE", "cli", 5)))])
    assert late[0].duplicate and not late[0].ok
    assert sm.get(0, b"k") == b"A"


@given(
    seqs=st.lists(st.integers(1, 60), unique=True, min_size=1, max_size=40),
    ackeds=st.lists(st.integers(0, 60), min_size=40, max_size=40),
    cuts=st.lists(st.integers(1, 40), max_size=4),
    restarts=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_session_records_keep_exactly_the_unacknowledged_results(
    seqs: list[int], ackeds: list[int], cuts: list[int], restarts: list[bool]
) -> None:
    """Session writes are deferred to the end of a run: however the commands fall into
    runs, and whether the process restarts between runs (a new state machine over the
    same engine, which reads the stored results back), the engine ends up with results
    for exactly the stored seqs at or above the client's acked floor. A retry of any of
    them gets its first result back; a retry of an acknowledged seq is answered as
    such, never applied again. No range delete is written on this path."""
    from atoll.coordination._statemachine import NS_SESSION, _session_result_prefix
    from atoll.core import OP_DELETE_RANGE
    from atoll.storage.memory import MemoryEngine

    engine = MemoryEngine()
    sm = KVStateMachine(engine)
    floor = 0
    stored: set[int] = set()
    commands = []
    for i, (seq, acked) in enumerate(zip(seqs, ackeds, strict=False)):
        commands.append((i + 1, encode_command(PutCommand(b"k", b"v", "c", seq, acked))))
        if seq < floor:
            continue  # answered as already acknowledged: nothing stored, floor unchanged
        floor = max(floor, acked)
        if seq >= floor:
            stored.add(seq)
    bounds = sorted({0, len(commands), *(c for c in cuts if c < len(commands))})
    for n, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if restarts[n % len(restarts)]:
            sm = KVStateMachine(engine)
        batch = WriteBatch()
        run = sm.begin(2, batch)
        for i, d in commands[lo:hi]:
            run.apply(i, d)
        run.finish()
        assert all(op[0] != OP_DELETE_RANGE for op in batch.ops)
        engine.write(batch, sync=False)
    prefix = _session_result_prefix(2, b"c")
    kept = {
        int.from_bytes(k[len(prefix) :], "big")
        for k, _ in sm.engine.scan(NS_SESSION, prefix, prefix + b"\xff" * 9)
    }
    assert kept == {s for s in stored if s >= floor}
    assert sm.applied_index(2) == len(commands)
    index = len(commands)
    for seq in sorted(stored):
        index += 1
        retry = _apply(sm, 2, [(index, encode_command(PutCommand(b"k", b"again", "c", seq)))])
        assert retry[0].duplicate
        assert retry[0].ok == (seq >= floor)
    assert sm.get(2, b"k") == b"v"  # no retry was applied again


def test_results_an_earlier_process_left_below_the_floor_are_deleted_at_the_next_ack(
    engine: StorageEngine,
) -> None:
    """Results below the acked floor that an earlier process left stored (the previous
    layout deleted them in batches) are found by the first scan of the client's results
    and deleted when its floor next rises; the ones above it stay."""
    from atoll.coordination._statemachine import (
        _QQQ,
        NS_SESSION,
        _session_meta_key,
        _session_result_prefix,
    )

    prefix = _session_result_prefix(0, b"c")
    leftovers = WriteBatch()
    # The earlier process's session record: acked floor 1, seqs up to 3 applied.
    leftovers.put(NS_SESSION, _session_meta_key(0, b"c"), _QQQ.pack(1, 0, 3))
    for seq in (1, 2, 3):
        leftovers.put(NS_SESSION, prefix + seq.to_bytes(8, "big"), encode_result(CommandResult()))
    sm = KVStateMachine(engine)
    engine.write(leftovers, sync=False)
    _apply(sm, 0, [(1, encode_command(PutCommand(b"k", b"v", "c", 5, 3)))])

    def stored() -> list[int]:
        return [
            int.from_bytes(k[len(prefix) :], "big")
            for k, _ in engine.scan(NS_SESSION, prefix, prefix + b"\xff" * 9)
        ]

    assert stored() == [3, 5]
    _apply(sm, 0, [(2, encode_command(PutCommand(b"k", b"w", "c", 6, 6)))])
    assert stored() == [6]


def test_a_seq_below_the_highest_applied_one_is_applied_once(engine: StorageEngine) -> None:
    """Seqs may reach a partition out of order (retries, reconnects): a seq below the
    highest applied one that was never applied is applied, not mistaken for a retry."""
    sm = KVStateMachine(engine)
    _apply(sm, 0, [(1, encode_command(PutCommand(b"a", b"5", "cli", 5)))])
    late = _apply(sm, 0, [(2, encode_command(CasCommand(b"b", None, b"3", "cli", 3)))])
    assert late[0] == CommandResult(ok=True)
    assert sm.get(0, b"b") == b"3"
    again = _apply(sm, 0, [(3, encode_command(CasCommand(b"b", None, b"3", "cli", 3)))])
    assert again[0].duplicate and again[0].ok and sm.get(0, b"b") == b"3"


def test_an_acknowledged_seq_is_refused_in_the_same_run_as_in_a_later_one(
    engine: StorageEngine,
) -> None:
    """How entries fall into apply runs differs between replicas: the answer must not."""
    cmds = [
        (1, encode_command(PutCommand(b"a", b"1", "cli", 1, 0))),
        (2, encode_command(PutCommand(b"b", b"2", "cli", 2, 2))),
        (3, encode_command(PutCommand(b"a", b"late", "cli", 1, 0))),
    ]
    one_run = _apply(KVStateMachine(engine), 0, cmds)
    assert one_run[2] == CommandResult(ok=False, duplicate=True)
    sm = KVStateMachine(engine)
    split = [_apply(sm, 5, [c])[0] for c in cmds]
    assert split == one_run and sm.get(5, b"a") == b"1"


def test_session_records_of_the_earlier_layout_still_answer_retries(
    engine: StorageEngine,
) -> None:
    """A session written before the highest seq was recorded (16-byte meta, results as
    frames) still answers a retry with its first result."""
    from atoll.coordination._statemachine import (
        NS_SESSION,
        _session_meta_key,
        _session_result_prefix,
    )
    from atoll.core import Frame, encode_frame

    sm = KVStateMachine(engine)
    old_result = encode_frame(Frame("res", {"o": False, "x": True, "p": True}, (b"was",)))
    batch = WriteBatch()
    batch.put(NS_SESSION, _session_meta_key(1, b"cli"), (2).to_bytes(8, "big") * 2)
    batch.put(NS_SESSION, _session_result_prefix(1, b"cli") + (9).to_bytes(8, "big"), old_result)
    engine.write(batch, sync=False)
    retry = _apply(sm, 1, [(3, encode_command(CasCommand(b"k", b"x", b"y", "cli", 9)))])
    assert retry[0] == CommandResult(ok=False, previous=b"was", existed=True, duplicate=True)
    assert sm.get(1, b"k") is None
    fresh = _apply(sm, 1, [(4, encode_command(PutCommand(b"k", b"v", "cli", 10)))])
    assert not fresh[0].duplicate and sm.get(1, b"k") == b"v"


@given(st.builds(CommandResult, st.booleans(), st.none() | vals, st.booleans()))
def test_result_encoding_round_trips(res: CommandResult) -> None:
    assert decode_result(encode_result(res)) == res


def test_sessions_expire_deterministically(engine: StorageEngine) -> None:
    sm = KVStateMachine(engine, session_window=10, session_sweep_every=8)
    _apply(sm, 0, [(1, encode_command(PutCommand(b"k", b"v", "old", 1)))])
    entries = [(i, encode_command(PutCommand(b"x", b"y", "new", i))) for i in range(2, 30)]
    _apply(sm, 0, entries)
    # "old" was forgotten, its stored result with it (point deletes, no range delete)...
    from atoll.coordination._statemachine import NS_SESSION, _session_result_prefix

    prefix = _session_result_prefix(0, b"old")
    assert list(engine.scan(NS_SESSION, prefix, prefix + b"\xff" * 9)) == []
    # ...so the same seq now applies again (as a new session).
    assert not _apply(sm, 0, [(30, encode_command(PutCommand(b"k", b"w", "old", 1)))])[0].duplicate


def test_snapshot_restore_moves_data_and_sessions(engine: StorageEngine) -> None:
    sm = KVStateMachine(engine)
    _apply(
        sm,
        7,
        [
            (1, encode_command(PutCommand(b"a", b"1", "c", 1))),
            (2, encode_command(PutCommand(b"b", b"2"))),
        ],
    )
    snap = sm.snapshot_partition(7)
    batch = WriteBatch()
    _apply(sm, 8, [(1, encode_command(PutCommand(b"stale", b"x")))])
    assert sm.restore_partition(8, snap, batch) == 2
    engine.write(batch)
    assert list(sm.scan(8)) == [(b"a", b"1"), (b"b", b"2")]
    assert sm.applied_index(8) == 2
    dup = _apply(sm, 8, [(3, encode_command(PutCommand(b"a", b"9", "c", 1)))])
    assert dup[0].duplicate and sm.get(8, b"a") == b"1"


def test_session_records_cached_between_runs_follow_a_restored_snapshot() -> None:
    """The state machine caches session records between apply runs; a snapshot restore
    replaces them, so a retry afterwards is judged by the restored records."""
    from atoll.storage.memory import MemoryEngine

    source = KVStateMachine(MemoryEngine())
    _apply(
        source, 0, [(i, encode_command(PutCommand(b"k", b"A%d" % i, "c", i, 1))) for i in (1, 2, 3)]
    )
    snap = source.snapshot_partition(0)

    target = KVStateMachine(MemoryEngine())
    # A different history for the same client: its cached floor is 9.
    _apply(
        target, 0, [(i, encode_command(PutCommand(b"k", b"B", "c", i, 9))) for i in range(1, 11)]
    )
    assert _apply(target, 0, [(11, encode_command(PutCommand(b"k", b"x", "c", 3)))])[0].ok is False
    batch = WriteBatch()
    target.restore_partition(0, snap, batch)
    target.engine.write(batch, sync=False)
    # Restored: the floor is 1 again and seq 3 was applied with its own result.
    retry = _apply(target, 0, [(4, encode_command(PutCommand(b"k", b"again", "c", 3)))])
    assert retry[0].duplicate and retry[0].ok
    assert target.get(0, b"k") == b"A3"


def test_a_new_client_costs_no_scan_of_stored_results() -> None:
    """A client without a session record has no stored results (they are written and
    deleted with the record): its first commands read no result range; a known
    client's stored results are scanned once per process."""
    from atoll.coordination._statemachine import NS_SESSION
    from atoll.storage.memory import MemoryEngine

    class CountingScans:
        def __init__(self) -> None:
            self.inner = MemoryEngine()
            self.scans = 0

        def scan(self, namespace: str, *args: Any, **kw: Any) -> Any:
            if namespace == NS_SESSION:
                self.scans += 1
            return self.inner.scan(namespace, *args, **kw)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    engine = CountingScans()
    sm = KVStateMachine(engine)  # type: ignore[arg-type]
    _apply(sm, 0, [(1, encode_command(PutCommand(b"k", b"v", "new", 1)))])
    _apply(sm, 0, [(2, encode_command(PutCommand(b"k", b"w", "new", 2, 2)))])
    assert engine.scans == 0
    restarted = KVStateMachine(engine)  # type: ignore[arg-type]
    _apply(restarted, 0, [(3, encode_command(PutCommand(b"k", b"x", "new", 3, 3)))])
    _apply(restarted, 0, [(4, encode_command(PutCommand(b"k", b"y", "new", 4, 4)))])
    assert engine.scans == 1  # the known client's results, read back once
