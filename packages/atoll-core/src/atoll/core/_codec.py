"""The Atoll wire format: length-prefixed frames with an orjson header and raw attachments.

Layout of one frame (all integers big-endian)::

    u32  length      number of bytes after this field
    u8   version     PROTOCOL_VERSION; a reader refuses any other
    u32  header_len  bytes of the orjson header document
    ...  header      {"t": type, "i": request id, "f": flags, "a": [attachment lengths], "h": {...}}
    ...  attachments raw bytes, concatenated, lengths given by "a"

Keys and values travel as attachments so the hot path never base64-encodes bytes.

Owns: encoding and incremental decoding of frames, and their validation.
Never: does IO; a malformed input raises :class:`FrameError`, it never crashes the caller.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from ._errors import FrameError, FrameTooLarge, UnsupportedVersion

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "FLAG_ERROR",
    "FLAG_REPLY",
    "FLAG_REQUEST",
    "PROTOCOL_VERSION",
    "Frame",
    "FrameDecoder",
    "decode_frame",
    "encode_frame",
]

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024

FLAG_REQUEST = 1
"""The sender expects a reply carrying the same request id."""
FLAG_REPLY = 2
"""This frame answers the request with the same request id."""
FLAG_ERROR = 4
"""This reply is an error; its header is :func:`atoll.core.error_to_wire` output."""

_PREFIX = struct.Struct(">IBI")
_U32 = struct.Struct(">I")
_MAX_HEADER_BYTES = 1024 * 1024


class _Value:
    """Value semantics for this package's plain classes (:class:`Frame`,
    ``KVRequest``): equality (same class, equal fields), hashing and ``repr`` over
    ``_FIELDS``. atoll-replication and atoll-coordination have their own copy: a mypyc
    build covers one package, and a native class cannot inherit from another build's
    class.
    """

    __slots__ = ()
    _FIELDS: ClassVar[tuple[str, ...]] = ()

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Value)
        return self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Value)
        return self._key() != other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__name__}({body})"


class Frame(_Value):
    """One message: a type name, a JSON-safe header and raw byte attachments.

    ``request_id`` and ``flags`` are set by transports to pair requests with replies;
    protocol code normally leaves them at zero. A plain slotted class with value
    equality and ``repr`` (built for every frame and sub-request; compiled with mypyc it
    is a native class): treat it as immutable.
    """

    __slots__ = ("attachments", "flags", "header", "request_id", "type")
    _FIELDS: ClassVar[tuple[str, ...]] = ("type", "header", "attachments", "request_id", "flags")

    def __init__(
        self,
        type: str,
        header: dict[str, Any] | None = None,
        attachments: tuple[bytes, ...] = (),
        request_id: int = 0,
        flags: int = 0,
    ) -> None:
        self.type = type
        self.header: dict[str, Any] = {} if header is None else header
        self.attachments = attachments
        self.request_id = request_id
        self.flags = flags

    @property
    def is_request(self) -> bool:
        """Whether the sender waits for a reply."""
        return bool(self.flags & FLAG_REQUEST)

    @property
    def is_reply(self) -> bool:
        """Whether this frame answers a request."""
        return bool(self.flags & FLAG_REPLY)

    @property
    def is_error(self) -> bool:
        """Whether this reply carries an error."""
        return bool(self.flags & FLAG_ERROR)

    def payload_bytes(self) -> int:
        """Total bytes of the attachments (a cheap size estimate for flow control)."""
        return sum(len(a) for a in self.attachments)


_JOIN_SLICE = 4096
_COPY_WHOLE_BYTES = 1024 * 1024


def encode_frame(frame: Frame) -> bytes:
    """Encode ``frame`` to bytes, length prefix included."""
    atts: Sequence[bytes] = frame.attachments
    doc: dict[str, Any] = {"t": frame.type, "h": frame.header}
    if frame.request_id:
        doc["i"] = frame.request_id
    if frame.flags:
        doc["f"] = frame.flags
    if atts:
        doc["a"] = [len(a) for a in atts]
    try:
        header = orjson.dumps(doc)
    except TypeError as exc:
        raise FrameError(f"frame {frame.type!r}: header is not JSON-serialisable: {exc}") from exc
    length = 1 + 4 + len(header) + sum(doc["a"]) if atts else 1 + 4 + len(header)
    if atts:
        if len(atts) > _JOIN_SLICE:
            # One join over millions of parts holds the GIL for all of it (~200 ms for
            # a 2M-part snapshot); slices joined one by one let the event loop run
            # between them, and the final join is one large copy per slice.
            atts = [b"".join(atts[i : i + _JOIN_SLICE]) for i in range(0, len(atts), _JOIN_SLICE)]
        return b"".join((_PREFIX.pack(length, PROTOCOL_VERSION, len(header)), header, *atts))
    return _PREFIX.pack(length, PROTOCOL_VERSION, len(header)) + header


def _parse_body(body: memoryview) -> Frame:
    """Parse everything after the length field."""
    if len(body) < 5:
        raise FrameError(f"frame body of {len(body)} bytes is shorter than its 5-byte prefix")
    version = body[0]
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"frame protocol version {version} is not supported "
            f"(this node reads {PROTOCOL_VERSION})"
        )
    (hlen,) = _U32.unpack_from(body, 1)
    if hlen > _MAX_HEADER_BYTES or 5 + hlen > len(body):
        raise FrameError(f"frame header length {hlen} does not fit in a {len(body)}-byte frame")
    try:
        doc = orjson.loads(body[5 : 5 + hlen])
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"frame header is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise FrameError("frame header is not a JSON object")
    ftype = doc.get("t")
    header = doc.get("h", {})
    lens = doc.get("a", [])
    rid = doc.get("i", 0)
    flags = doc.get("f", 0)
    if not isinstance(ftype, str) or not ftype:
        raise FrameError("frame header has no string type 't'")
    if not isinstance(header, dict):
        raise FrameError(f"frame {ftype!r}: header 'h' is not an object")
    if not isinstance(rid, int) or not isinstance(flags, int) or rid < 0 or flags < 0:
        raise FrameError(f"frame {ftype!r}: request id or flags are not non-negative integers")
    # sum() refuses non-numbers and turns a float into a float total; min() finds a
    # negative size. Both run in C: a kv.multi frame declares hundreds of sizes.
    total: Any = None
    if isinstance(lens, list):
        try:
            total = sum(lens)
        except TypeError:
            total = None
    if type(total) is not int or (lens and min(lens) < 0):
        raise FrameError(f"frame {ftype!r}: attachment lengths 'a' are not a list of sizes")
    pos = 5 + hlen
    if pos + total != len(body):
        raise FrameError(
            f"frame {ftype!r}: attachments declare {total} bytes but {len(body) - pos} follow"
        )
    if not lens:
        return Frame(ftype, header, (), rid, flags)
    # Slicing bytes makes one object per attachment where slicing the memoryview makes
    # two; a frame small enough is copied once to bytes first (a large one, such as a
    # snapshot, is not: its attachments are copied out of the view one by one).
    atts: list[bytes] = []
    if len(body) <= _COPY_WHOLE_BYTES:
        data = bytes(body)
        for n in lens:
            atts.append(data[pos : pos + n])
            pos += n
    else:
        for n in lens:
            atts.append(bytes(body[pos : pos + n]))
            pos += n
    return Frame(ftype, header, tuple(atts), rid, flags)


def decode_frame(data: bytes, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
    """Decode exactly one whole frame (length prefix included) from ``data``."""
    if len(data) < 4:
        raise FrameError(f"{len(data)} bytes is too short for a frame")
    (length,) = _U32.unpack_from(data, 0)
    if length > max_frame_bytes:
        raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {max_frame_bytes}")
    if length != len(data) - 4:
        raise FrameError(f"frame declares {length} bytes but {len(data) - 4} were given")
    return _parse_body(memoryview(data)[4:])


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole frames out.

    Stream transports receive large chunks (64 KiB) and split frames here, which is
    several times faster than reading each frame with ``receive_exactly``. After a
    :class:`FrameError` the stream is out of sync and the connection must be closed.
    """

    __slots__ = ("_buf", "_max", "_need")

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes
        self._need = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Append ``data`` and return every frame now complete, in order."""
        buf = self._buf
        buf += data
        if len(buf) < self._need:
            return []
        out: list[Frame] = []
        pos = 0
        end = len(buf)
        view = memoryview(buf)
        try:
            while end - pos >= 4:
                (length,) = _U32.unpack_from(buf, pos)
                if length > self._max:
                    raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {self._max}")
                if end - pos - 4 < length:
                    self._need = pos + 4 + length
                    break
                out.append(_parse_body(view[pos + 4 : pos + 4 + length]))
                pos += 4 + length
            else:
                self._need = 0
        finally:
            view.release()
        if pos:
            del buf[:pos]
            if self._need:
                self._need -= pos
        return out
