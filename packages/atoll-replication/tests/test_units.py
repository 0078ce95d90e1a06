"""Unit tests of the pure replication pieces: logs, progress, reads, wire, sessions, and
the no-IO contract of every core module."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.core import CorruptData, FrameError, decode_frame, encode_frame
from atoll.replication import (
    ConfState,
    Entry,
    EntryKind,
    Inflights,
    MemoryLogStorage,
    Message,
    MessageType,
    Progress,
    ProgressState,
    RaftLog,
    ReadIndexQueue,
    SessionOutcome,
    SessionTable,
    Snapshot,
    SnapshotMeta,
    UnstableLog,
    frame_to_message,
    message_to_frame,
)


def _log(terms: list[int]) -> RaftLog:
    disk = MemoryLogStorage()
    disk.append([Entry(i + 1, t) for i, t in enumerate(terms)])
    return RaftLog(disk, max_apply_bytes=1 << 20)


def test_maybe_append_truncates_at_the_first_conflict_only() -> None:
    log = _log([1, 1, 2, 2])
    assert log.maybe_append(2, 1, 0, (Entry(3, 2), Entry(4, 3), Entry(5, 3))) == 5
    assert [log.term(i) for i in range(1, 6)] == [1, 1, 2, 3, 3]
    assert log.unstable.offset == 4
    assert log.maybe_append(4, 2, 0, ()) is None  # term mismatch at 4
    # A stale, shorter append never truncates matching entries.
    assert log.maybe_append(1, 1, 0, (Entry(2, 1),)) == 2
    assert log.last_index() == 5


def test_commit_only_current_term_and_never_backwards() -> None:
    log = _log([1, 1, 2])
    assert not log.maybe_commit(2, 2)  # index 2 is a term-1 entry
    assert log.maybe_commit(3, 2)
    log.commit_to(1)
    assert log.committed == 3


def test_find_conflict_by_term() -> None:
    log = _log([1, 1, 1, 4, 4, 5, 5])
    assert log.find_conflict_by_term(7, 3) == (3, 1)
    assert log.find_conflict_by_term(7, 5) == (7, 5)
    assert log.find_conflict_by_term(0, 1) == (0, 0)


def test_unstable_stable_to_ignores_replaced_entries() -> None:
    u = UnstableLog(5)
    u.truncate_and_append([Entry(5, 1), Entry(6, 1)])
    u.truncate_and_append([Entry(6, 2)])
    u.stable_to(6, 1)  # was replaced while being persisted
    assert u.offset == 5 and len(u.entries) == 2
    u.stable_to(6, 2)
    assert u.offset == 7 and not u.entries
    u.restore(Snapshot(SnapshotMeta(10, 3)))
    assert u.maybe_term(10) == 3 and u.maybe_last_index() == 10


def test_inflights_count_and_bytes() -> None:
    w = Inflights(3, max_bytes=100)
    w.add(1, 10)
    w.add(2, 95)
    assert w.full()
    w.free_le(1)
    assert not w.full() and w.bytes == 95
    w.free_first()
    assert len(w) == 0 and w.bytes == 0


def test_progress_probe_replicate_snapshot() -> None:
    pr = Progress(next=10)
    assert not pr.is_paused()
    pr.sent_entries(1, 10, 5)
    assert pr.is_paused()
    assert not pr.maybe_decr_to(5, 3), "stale rejection ignored"
    assert pr.maybe_decr_to(9, 4)
    assert pr.next == 5 and not pr.is_paused()
    assert pr.maybe_update(7)
    pr.become_replicate()
    assert pr.next == 8 and pr.state is ProgressState.REPLICATE
    pr.become_snapshot(Snapshot(SnapshotMeta(20, 2)))
    assert pr.is_paused() and pr.pending_snapshot == 20
    pr.become_probe()
    assert pr.next == 21


def test_read_index_queue_releases_in_order() -> None:
    q = ReadIndexQueue()
    assert q.add(5, b"r1", "a", "a") and q.add(6, b"r2", "b", "a")
    assert not q.add(7, b"r1", "a", "a")
    assert q.ack("b", b"r2") == {"a", "b"}
    released = q.release_through(b"r2")
    assert [r.context for r in released] == [b"r1", b"r2"]
    assert len(q) == 0 and q.ack("b", b"r1") is None


def test_message_frame_round_trip() -> None:
    m = Message(
        MessageType.APP,
        7,
        "n1",
        "n2",
        term=3,
        log_term=2,
        index=9,
        commit=8,
        entries=(Entry(10, 3, b"\x00raw"), Entry(11, 3, b"", EntryKind.CONF_CHANGE)),
        context=b"ctx",
        stamp=1.5,
        snapshot=SnapshotMeta(4, 2, ConfState(voters=frozenset({"n1"}))),
        snap_offset=3,
        snap_data=b"chunk",
        snap_done=True,
        reject=True,
        reject_hint=4,
    )
    frame = message_to_frame(m)
    assert frame.attachments[0] == b"\x00raw"
    assert frame_to_message(decode_frame(encode_frame(frame))) == m
    small = Message(MessageType.HEARTBEAT, 1, "a", "b", term=1)
    assert len(encode_frame(message_to_frame(small))) < 80


@pytest.mark.parametrize(
    "header",
    [
        {"y": 99, "s": "a", "d": "b"},
        {"y": 1, "s": 1, "d": "b"},
        {"y": 1, "s": "a", "d": "b", "t": -1},
        {"y": 1, "s": "a", "d": "b", "e": [[1, 1]]},
        {"y": [1], "s": "a", "d": "b"},
        {"y": True, "s": "a", "d": "b"},
        {"y": 1, "s": "a", "d": "b", "e": {"x": 1}},
        {"y": 1, "s": "a", "d": "b", "e": [[1, True, 0]]},
        {"y": 1, "s": "a", "d": "b", "e": [[1, 1, 7]]},
        {"y": 1, "s": "a", "d": "b", "e": [[1, 1, [0]]]},
        {"y": 1, "s": "a", "d": "b", "st": "later"},
        {"y": 1, "s": "a", "d": "b", "g": 1.5},
        {"y": 1, "s": "a", "d": "b", "sn": [1, 1]},
    ],
)
def test_malformed_messages_raise_frame_error(header: dict[str, object]) -> None:
    from atoll.core import Frame

    with pytest.raises(FrameError):
        frame_to_message(Frame("raft", header, (b"", b"")))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["y", "g", "s", "d", "t", "lt", "i", "c", "e", "r", "rh", "st", "sn"]),
        _json,
    ),
    n_atts=st.integers(0, 4),
)
def test_any_header_decodes_or_raises_frame_error(header: dict[str, object], n_atts: int) -> None:
    from atoll.core import Frame

    try:
        frame_to_message(Frame("raft", header, tuple(b"x" for _ in range(n_atts))))
    except FrameError:
        pass


def _batch_messages() -> list[Message]:
    big = 2**64 - 1
    return [
        Message(
            MessageType.APP,
            3,
            "n1",
            "n2",
            term=5,
            log_term=4,
            index=99,
            commit=97,
            entries=(Entry(100, 5, b"\x00cmd"), Entry(101, 5, b"", EntryKind.CONF_CHANGE)),
            stamp=12.25,
        ),
        Message(MessageType.APP_RESP, 4, "n1", "n2", term=5, index=big, reject=True, reject_hint=7),
        Message(MessageType.HEARTBEAT, big, "n1", "n2", term=big, context=b"read-1"),
        Message(
            MessageType.SNAP,
            5,
            "n1",
            "nœud-3",
            term=2,
            snapshot=SnapshotMeta(40, 2, ConfState(voters=frozenset({"n1", "nœud-3"}))),
            snap_offset=1 << 20,
            snap_data=b"chunk" * 10,
            snap_done=True,
        ),
    ]


def test_batch_round_trip_binary_and_reads_the_json_layout() -> None:
    from atoll.core import FrameDecoder
    from atoll.replication._wire import BATCH_VERSION, decode_batch, encode_batch, encode_batch_v1

    msgs = _batch_messages()
    frame = encode_batch(msgs)
    assert frame.header["v"] == BATCH_VERSION and len(frame.attachments) == 1
    assert frame.header["ids"] == ["n1", "n2", "nœud-3"]  # each node id once
    (wire,) = FrameDecoder().feed(encode_frame(frame))
    assert decode_batch(wire) == msgs
    assert decode_batch(decode_frame(encode_frame(encode_batch_v1(msgs)))) == msgs
    assert decode_batch(encode_batch([])) == []


def test_batch_encode_refuses_fields_that_do_not_fit() -> None:
    from atoll.replication._wire import encode_batch

    for bad in (
        Message(MessageType.APP, 1, "a", "b", term=-1),
        Message(MessageType.APP, 1, "a", "b", commit=2**64),
        Message(MessageType.APP, 1, "a", "b", entries=(Entry(-1, 1),)),
    ):
        with pytest.raises(FrameError, match="does not fit"):
            encode_batch([bad])


def test_malformed_binary_batches_raise_frame_error() -> None:
    from atoll.core import Frame
    from atoll.replication._wire import BATCH_FRAME, decode_batch, encode_batch

    good = encode_batch(_batch_messages())
    blob = good.attachments[0]
    ids = good.header["ids"]
    cases = [
        Frame(BATCH_FRAME, {"v": 3, "ids": ids}, (blob,)),  # a layout this node cannot read
        Frame(BATCH_FRAME, {"v": 2, "ids": "n1"}, (blob,)),
        Frame(BATCH_FRAME, {"v": 2, "ids": [1, 2]}, (blob,)),
        Frame(BATCH_FRAME, {"v": 2, "ids": ids}, (blob, b"")),
        Frame(BATCH_FRAME, {"v": 2, "ids": ids[:1]}, (blob,)),  # id index out of range
        Frame(BATCH_FRAME, {"v": 2, "ids": ids}, (b"\x63" + blob[1:],)),  # unknown type 99
        Frame(BATCH_FRAME, {}, ()),
        Frame("raft", {"v": 2, "ids": ids}, (blob,)),
    ]
    # Every strict prefix that does not end on a message boundary is truncated.
    ends = {0, len(blob)}
    pos = 0
    for m in _batch_messages():
        pos += len(encode_batch([m]).attachments[0])
        ends.add(pos)
    cases += [
        Frame(BATCH_FRAME, good.header, (blob[:n],)) for n in range(len(blob)) if n not in ends
    ]
    for frame in cases:
        with pytest.raises(FrameError):
            decode_batch(frame)


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=300), cut=st.integers(0, 400))
def test_any_binary_batch_decodes_or_raises_frame_error(blob: bytes, cut: int) -> None:
    from atoll.core import Frame
    from atoll.replication._wire import BATCH_FRAME, decode_batch, encode_batch

    valid = encode_batch(_batch_messages()).attachments[0]
    for data in (blob, valid[:cut] + blob):
        try:
            decode_batch(Frame(BATCH_FRAME, {"v": 2, "ids": ["a", "b", "c"]}, (data,)))
        except FrameError:
            pass


def test_messages_entries_and_hard_states_are_values() -> None:
    from atoll.replication import HardState

    a, b = _batch_messages()[0], _batch_messages()[0]
    assert a == b and hash(a) == hash(b) and a is not b
    c = a.replace(term=6)
    assert c != a and c.term == 6 and c.entries == a.entries and a.term == 5
    assert repr(a).startswith("Message(type=<MessageType.APP: 1>, group_id=3, src='n1'")
    with pytest.raises(TypeError, match="no field 'terms'"):
        a.replace(terms=1)
    assert {Entry(1, 2, b"x"), Entry(1, 2, b"x")} == {Entry(1, 2, b"x")}
    assert Entry(1, 2) != Entry(1, 3) and Entry(1, 2) != (1, 2)
    assert HardState(1, "n1", 3) == HardState(1, "n1", 3) != HardState(1, None, 3)
    assert repr(HardState(1, "n1", 3)) == "HardState(term=1, vote='n1', commit=3)"


def test_session_table_dedups_retries() -> None:
    t = SessionTable(max_sessions=2)
    assert t.check("c1", 1) == (SessionOutcome.NEW, None)
    t.record("c1", 1, b"ok1", lowest_unacked=1, index=10)
    assert t.check("c1", 1) == (SessionOutcome.DUPLICATE, b"ok1")
    t.record("c1", 2, b"ok2", lowest_unacked=2, index=11)  # client got the reply to 1
    assert t.check("c1", 1) == (SessionOutcome.EXPIRED, None)
    assert t.check("c1", 2) == (SessionOutcome.DUPLICATE, b"ok2")
    t.record("c2", 1, b"x", lowest_unacked=1, index=12)
    t.record("c3", 1, b"y", lowest_unacked=1, index=13)  # evicts c1 (idle the longest)
    assert len(t) == 2 and t.check("c1", 2) == (SessionOutcome.NEW, None)
    again = SessionTable.from_bytes(t.to_bytes())
    assert again.check("c3", 1) == (SessionOutcome.DUPLICATE, b"y")
    with pytest.raises(CorruptData):
        SessionTable.from_bytes(b"{}")


SRC = pathlib.Path(__file__).parents[1] / "src/atoll/replication"
PURE = [
    "_confchange.py",
    "_core.py",
    "_log.py",
    "_progress.py",
    "_readonly.py",
    "_ready.py",
    "_session.py",
    "_storage.py",
    "_types.py",
    "_wire.py",
]  # the shell (_host.py) is the one place allowed to do IO
FORBIDDEN = {"anyio", "asyncio", "time", "random", "socket", "threading", "trio"}


@pytest.mark.parametrize("path", [SRC / n for n in PURE], ids=lambda p: p.name)
def test_replication_core_modules_import_no_io(path: pathlib.Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
