"""The wire form of Raft messages: a compact JSON-safe header plus raw byte attachments.

Owns: converting a :class:`Message` to and from ``(header, attachments)`` and an
:class:`atoll.core.Frame` of type ``"raft"``, and the ``"raft.batch"`` frame that
carries every message a host sends one peer in one cycle. Entry payloads, read contexts and snapshot
chunks travel as attachments, never base64.
Never: does IO; malformed input raises :class:`atoll.core.FrameError`, never crashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from atoll.core import Frame, FrameError

from ._types import ConfState, Entry, EntryKind, Message, MessageType, SnapshotMeta

__all__ = [
    "BATCH_FRAME",
    "FRAME_TYPE",
    "decode_batch",
    "decode_message",
    "encode_batch",
    "encode_message",
    "frame_to_message",
    "message_to_frame",
]

FRAME_TYPE = "raft"
BATCH_FRAME = "raft.batch"
"""The frame type carrying every message a host sends one peer in one cycle."""


def _conf_to_doc(cs: ConfState) -> dict[str, Any]:
    doc: dict[str, Any] = {"v": sorted(cs.voters)}
    if cs.voters_outgoing:
        doc["vo"] = sorted(cs.voters_outgoing)
    if cs.learners:
        doc["l"] = sorted(cs.learners)
    if cs.learners_next:
        doc["ln"] = sorted(cs.learners_next)
    if cs.auto_leave:
        doc["al"] = True
    if cs.auto_promote:
        doc["ap"] = sorted(cs.auto_promote)
    return doc


def _ids(doc: dict[str, Any], key: str) -> frozenset[str]:
    v = doc.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise FrameError(f"raft message: conf state field {key!r} is not a list of node ids")
    return frozenset(v)


def _conf_from_doc(doc: Any) -> ConfState:
    if not isinstance(doc, dict):
        raise FrameError("raft message: conf state is not an object")
    return ConfState(
        voters=_ids(doc, "v"),
        voters_outgoing=_ids(doc, "vo"),
        learners=_ids(doc, "l"),
        learners_next=_ids(doc, "ln"),
        auto_leave=bool(doc.get("al", False)),
        auto_promote=_ids(doc, "ap"),
    )


def encode_message(m: Message) -> tuple[dict[str, Any], tuple[bytes, ...]]:
    """The header document and attachments of ``m``; default fields are omitted.

    Attachments are: each entry's data in order, then the context, then the snapshot
    chunk.
    """
    h: dict[str, Any] = {"y": int(m.type), "g": m.group_id, "s": m.src, "d": m.dst}
    if m.term:
        h["t"] = m.term
    if m.log_term:
        h["lt"] = m.log_term
    if m.index:
        h["i"] = m.index
    if m.commit:
        h["c"] = m.commit
    if m.reject:
        h["r"] = True
    if m.reject_hint:
        h["rh"] = m.reject_hint
    if m.stamp:
        h["st"] = m.stamp
    if m.entries:
        h["e"] = [[e.index, e.term, int(e.kind)] for e in m.entries]
    if m.snapshot is not None:
        h["sn"] = [m.snapshot.index, m.snapshot.term, _conf_to_doc(m.snapshot.conf_state)]
    if m.snap_offset:
        h["so"] = m.snap_offset
    if m.snap_done:
        h["sd"] = True
    return h, (*(e.data for e in m.entries), m.context, m.snap_data)


def _int(h: dict[str, Any], key: str) -> int:
    v = h.get(key, 0)
    if type(v) is not int or v < 0:  # type() is exact: a bool is refused too
        raise FrameError(f"raft message: field {key!r} is not a non-negative integer: {v!r}")
    return v


_TYPES = {int(t): t for t in MessageType}
_KINDS = {int(k): k for k in EntryKind}


def _entries(raw_entries: Any, attachments: tuple[bytes, ...]) -> tuple[Entry, ...]:
    if type(raw_entries) is not list:
        raise FrameError("raft message: entries 'e' is not a list")
    if len(attachments) != len(raw_entries) + 2:
        raise FrameError(
            f"raft message: {len(raw_entries)} entries need {len(raw_entries) + 2} "
            f"attachments, got {len(attachments)}"
        )
    entries: list[Entry] = []
    for meta, data in zip(raw_entries, attachments, strict=False):
        if type(meta) is not list or len(meta) != 3:
            raise FrameError(f"raft message: bad entry header {meta!r}")
        index, term, kind = meta
        if type(index) is not int or type(term) is not int or type(kind) is not int:
            raise FrameError(f"raft message: bad entry header {meta!r}")
        ek = _KINDS.get(kind)
        if ek is None:
            raise FrameError(f"raft message: unknown entry kind {kind!r}")
        entries.append(Entry(index, term, data, ek))
    return tuple(entries)


def decode_message(header: dict[str, Any], attachments: tuple[bytes, ...]) -> Message:
    """Rebuild the :class:`Message` that :func:`encode_message` produced.

    On the hot path of every node (every append, response and heartbeat), so the checks
    are written out with exact ``type()`` tests and table lookups rather than helpers
    that raise through enum constructors.
    """
    y = header.get("y")
    kind = _TYPES.get(y) if type(y) is int else None
    if kind is None:
        raise FrameError(f"raft message: unknown type {header.get('y')!r}")
    src, dst = header.get("s"), header.get("d")
    if type(src) is not str or type(dst) is not str:
        raise FrameError("raft message: source and destination must be node id strings")
    raw_entries = header.get("e")
    if raw_entries is None:
        if len(attachments) != 2:
            raise FrameError(f"raft message: 0 entries need 2 attachments, got {len(attachments)}")
        entries: tuple[Entry, ...] = ()
    else:
        entries = _entries(raw_entries, attachments)
    snapshot = None
    if "sn" in header:
        sn = header["sn"]
        if not isinstance(sn, list) or len(sn) != 3:
            raise FrameError(f"raft message: bad snapshot metadata {sn!r}")
        snapshot = SnapshotMeta(
            _int({"x": sn[0]}, "x"), _int({"x": sn[1]}, "x"), _conf_from_doc(sn[2])
        )
    stamp = header.get("st", 0.0)
    if type(stamp) is not float and type(stamp) is not int:
        raise FrameError(f"raft message: stamp is not a number: {stamp!r}")
    get = header.get
    ints = (get("g", 0), get("t", 0), get("lt", 0), get("i", 0), get("c", 0), get("rh", 0))
    for v in ints:
        if type(v) is not int or v < 0:  # type() is exact: a bool is refused too
            for key in ("g", "t", "lt", "i", "c", "rh"):
                _int(header, key)  # raises, naming the field
    so = _int(header, "so") if "so" in header else 0
    return Message(
        kind,
        ints[0],
        src,
        dst,
        ints[1],
        ints[2],
        ints[3],
        ints[4],
        entries,
        get("r", False) is True,
        ints[5],
        attachments[-2],
        float(stamp),
        snapshot,
        so,
        attachments[-1],
        get("sd", False) is True,
    )


def message_to_frame(m: Message) -> Frame:
    """Wrap ``m`` in a frame of type ``"raft"``."""
    header, attachments = encode_message(m)
    return Frame(FRAME_TYPE, header, attachments)


def frame_to_message(frame: Frame) -> Message:
    """Unwrap a ``"raft"`` frame (raises :class:`FrameError` for any other)."""
    if frame.type != FRAME_TYPE:
        raise FrameError(f"frame of type {frame.type!r} is not a raft message")
    return decode_message(frame.header, frame.attachments)


def encode_batch(msgs: Sequence[Message]) -> Frame:
    """One frame carrying ``msgs`` (all to the same peer)."""
    headers: list[Any] = []
    atts: list[bytes] = []
    for m in msgs:
        h, a = encode_message(m)
        headers.append([h, len(a)])
        atts.extend(a)
    return Frame(BATCH_FRAME, {"m": headers}, tuple(atts))


def decode_batch(frame: Frame) -> list[Message]:
    """Inverse of :func:`encode_batch`; raises FrameError on malformed input."""
    hs = frame.header.get("m")
    if frame.type != BATCH_FRAME or not isinstance(hs, list):
        raise FrameError(f"not a raft batch frame: {frame.type!r}")
    out: list[Message] = []
    pos = 0
    atts = frame.attachments
    for item in hs:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], dict)
            or not isinstance(item[1], int)
            or item[1] < 0
            or pos + item[1] > len(atts)
        ):
            raise FrameError("raft batch frame: malformed message entry")
        out.append(decode_message(item[0], tuple(atts[pos : pos + item[1]])))
        pos += item[1]
    if pos != len(atts):
        raise FrameError("raft batch frame: attachments left over")
    return out
