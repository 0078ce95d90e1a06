"""The wire form of Raft messages: a compact JSON-safe header plus raw byte attachments.

Owns: converting a :class:`Message` to and from ``(header, attachments)`` and an
:class:`atoll.core.Frame` of type ``"raft"``, and the ``"raft.batch"`` frame that
carries every message a host sends one peer in one cycle. Entry payloads, read contexts and snapshot
chunks travel as attachments, never base64.
Never: does IO; malformed input raises :class:`atoll.core.FrameError`, never crashes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import orjson

from atoll.core import Frame, FrameError

from ._types import ConfState, Entry, EntryKind, Message, MessageType, SnapshotMeta

__all__ = [
    "BATCH_FRAME",
    "BATCH_VERSION",
    "FRAME_TYPE",
    "decode_batch",
    "decode_message",
    "encode_batch",
    "encode_batch_v1",
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


# The binary batch layout (``raft.batch`` frames with header ``{"v": 2, "ids": [...]}``
# and one attachment). All integers little-endian. The node ids the messages name are
# listed once in the header; a message refers to them by position.
#
#   per message  type u8, flags u8 (1 reject, 2 snap_done, 4 snapshot meta follows),
#                src u16, dst u16, group u64, term u64, log_term u64, index u64,
#                commit u64, reject_hint u64, stamp f64, snap_offset u64,
#                entries u32, context bytes u32, snapshot chunk bytes u32
#   per entry    index u64, term u64, kind u8, data bytes u32, then the data
#   then         the context, [snapshot meta: u32 length + its JSON document], the chunk
#
# Every field is fixed-size, so a batch encodes with one ``struct`` call per message and
# entry and no JSON: the JSON layout (version 1, header ``{"m": [...]}``) cost ~3 us a
# message each way, which is most of what a follower spends on an append.
_MSG = struct.Struct("<BBHHQQQQQQdQIII")
_ENT = struct.Struct("<QQBI")
_U32 = struct.Struct("<I")
_F_REJECT = 1
_F_SNAP_DONE = 2
_F_SNAPSHOT = 4
_MAX_U64 = (1 << 64) - 1
BATCH_VERSION = 2
"""The layout :func:`encode_batch` writes; :func:`decode_batch` reads it and version 1."""


def encode_batch(msgs: Sequence[Message]) -> Frame:
    """One frame carrying ``msgs`` (to one peer), in the binary layout.

    Raises :class:`FrameError` if a field does not fit its wire size (a negative or
    over-64-bit integer, over 65,535 distinct node ids, a 4 GiB payload).
    """
    ids: dict[str, int] = {}
    parts: list[bytes] = []
    pack_msg = _MSG.pack
    pack_ent = _ENT.pack
    try:
        for m in msgs:
            src = ids.setdefault(m.src, len(ids))
            dst = ids.setdefault(m.dst, len(ids))
            flags = 0
            if m.reject:
                flags |= _F_REJECT
            if m.snap_done:
                flags |= _F_SNAP_DONE
            meta = b""
            if m.snapshot is not None:
                flags |= _F_SNAPSHOT
                sn = m.snapshot
                meta = orjson.dumps([sn.index, sn.term, _conf_to_doc(sn.conf_state)])
            entries = m.entries
            parts.append(
                pack_msg(
                    int(m.type),
                    flags,
                    src,
                    dst,
                    m.group_id,
                    m.term,
                    m.log_term,
                    m.index,
                    m.commit,
                    m.reject_hint,
                    m.stamp,
                    m.snap_offset,
                    len(entries),
                    len(m.context),
                    len(m.snap_data),
                )
            )
            for e in entries:
                parts.append(pack_ent(e.index, e.term, int(e.kind), len(e.data)))
                parts.append(e.data)
            parts.append(m.context)
            if meta:
                parts.append(_U32.pack(len(meta)))
                parts.append(meta)
            parts.append(m.snap_data)
    except struct.error as exc:
        raise FrameError(f"raft batch: a message field does not fit its wire size: {exc}") from None
    return Frame(BATCH_FRAME, {"v": BATCH_VERSION, "ids": list(ids)}, (b"".join(parts),))


def _decode_binary(header: dict[str, Any], attachments: tuple[bytes, ...]) -> list[Message]:
    ids = header.get("ids")
    if type(ids) is not list or not all(type(i) is str for i in ids):
        raise FrameError("raft batch frame: 'ids' is not a list of node ids")
    if len(attachments) != 1:
        raise FrameError(f"raft batch frame: expected 1 attachment, got {len(attachments)}")
    blob = attachments[0]
    end = len(blob)
    pos = 0
    nids = len(ids)
    msize = _MSG.size
    esize = _ENT.size
    unpack_msg = _MSG.unpack_from
    unpack_ent = _ENT.unpack_from
    out: list[Message] = []
    # Declared types let the compiled build use native integers for the fields below
    # (``unpack_from`` returns a tuple of Any).
    y: int
    flags: int
    src: int
    dst: int
    group: int
    term: int
    log_term: int
    index: int
    commit: int
    reject_hint: int
    stamp: float
    snap_offset: int
    nent: int
    nctx: int
    nsnap: int
    eindex: int
    eterm: int
    ekind: int
    elen: int
    while pos < end:
        if end - pos < msize:
            raise FrameError("raft batch frame: truncated message header")
        (
            y,
            flags,
            src,
            dst,
            group,
            term,
            log_term,
            index,
            commit,
            reject_hint,
            stamp,
            snap_offset,
            nent,
            nctx,
            nsnap,
        ) = unpack_msg(blob, pos)
        pos += msize
        kind = _TYPES.get(y)
        if kind is None:
            raise FrameError(f"raft message: unknown type {y!r}")
        if src >= nids or dst >= nids:
            raise FrameError("raft message: node id index out of range")
        entries: list[Entry] = []
        for _ in range(nent):
            if end - pos < esize:
                raise FrameError("raft batch frame: truncated entry header")
            eindex, eterm, ekind, elen = unpack_ent(blob, pos)
            pos += esize
            ek = _KINDS.get(ekind)
            if ek is None:
                raise FrameError(f"raft message: unknown entry kind {ekind!r}")
            if end - pos < elen:
                raise FrameError("raft batch frame: truncated entry data")
            entries.append(Entry(eindex, eterm, blob[pos : pos + elen], ek))
            pos += elen
        if end - pos < nctx:
            raise FrameError("raft batch frame: truncated context")
        context = blob[pos : pos + nctx]
        pos += nctx
        snapshot = None
        if flags & _F_SNAPSHOT:
            if end - pos < 4:
                raise FrameError("raft batch frame: truncated snapshot metadata")
            (nmeta,) = _U32.unpack_from(blob, pos)
            pos += 4
            if end - pos < nmeta:
                raise FrameError("raft batch frame: truncated snapshot metadata")
            snapshot = _snapshot_meta(blob[pos : pos + nmeta])
            pos += nmeta
        if end - pos < nsnap:
            raise FrameError("raft batch frame: truncated snapshot chunk")
        snap_data = blob[pos : pos + nsnap]
        pos += nsnap
        out.append(
            Message(
                kind,
                group,
                ids[src],
                ids[dst],
                term,
                log_term,
                index,
                commit,
                tuple(entries),
                bool(flags & _F_REJECT),
                reject_hint,
                context,
                stamp,
                snapshot,
                snap_offset,
                snap_data,
                bool(flags & _F_SNAP_DONE),
            )
        )
    return out


def _snapshot_meta(raw: bytes) -> SnapshotMeta:
    try:
        sn = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"raft message: snapshot metadata is not valid JSON: {exc}") from None
    if not isinstance(sn, list) or len(sn) != 3:
        raise FrameError(f"raft message: bad snapshot metadata {sn!r}")
    return SnapshotMeta(_int({"x": sn[0]}, "x"), _int({"x": sn[1]}, "x"), _conf_from_doc(sn[2]))


def encode_batch_v1(msgs: Sequence[Message]) -> Frame:
    """``msgs`` in the JSON batch layout of version 0.1 (a header document per message):
    what an older node sends. Kept to test that :func:`decode_batch` still reads it."""
    headers: list[Any] = []
    atts: list[bytes] = []
    for m in msgs:
        h, a = encode_message(m)
        headers.append([h, len(a)])
        atts.extend(a)
    return Frame(BATCH_FRAME, {"m": headers}, tuple(atts))


def decode_batch(frame: Frame) -> list[Message]:
    """Inverse of :func:`encode_batch` (and of the older JSON layout, so a node still
    reads what a node of 0.1 sends); raises FrameError on malformed input."""
    if frame.type != BATCH_FRAME:
        raise FrameError(f"not a raft batch frame: {frame.type!r}")
    v = frame.header.get("v")
    if v == BATCH_VERSION:
        try:
            return _decode_binary(frame.header, frame.attachments)
        except struct.error as exc:  # unreachable given the length checks; never crash
            raise FrameError(f"raft batch frame: {exc}") from None
    if v is not None:
        raise FrameError(f"raft batch frame: unsupported layout version {v!r}")
    hs = frame.header.get("m")
    if not isinstance(hs, list):
        raise FrameError("raft batch frame: neither the binary nor the JSON layout")
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
