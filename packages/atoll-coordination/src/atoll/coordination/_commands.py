"""Commands the key-value state machine applies, and their compact encoding.

Owns: the write commands clients send through Raft (put, delete, compare-and-set, batch)
and their byte encoding inside a log entry, and the command results.
Never: applies anything (see ``_statemachine``) or does IO.

A command is encoded in a compact binary layout (every replica decodes every entry it
applies, so this is on the hot path three times per write)::

    u8 0xFF | u8 kind (1 put, 2 delete, 3 cas, 4 batch) | u16 len + client id (UTF-8)
    | u64 seq | u64 acked | body
    put:    u32 len + key | value (the rest)
    delete: key (the rest)
    cas:    u8 flags (1 = expected present, 2 = new present) | u32 len + key
            | u32 len + expected | new (the rest)
    batch:  u32 count | count x (u8 present | u32 len + key | u32 len + value)

Entries written before this layout are Atoll frames (orjson header, raw attachments);
:func:`decode_command` still reads them. A frame starts with its u32 length, whose first
byte is 0 for any frame below 16 MiB and never 0xFF (frames are capped far below 4 GiB),
so the first byte tells the two apart. Keys and values are never base64-encoded, and
malformed input of either form raises :class:`atoll.core.InvalidRequest`. Every command
carries the client's session id and sequence number so a retried command is applied
once (Raft thesis section 6.3).
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

from atoll.core import FrameError, InvalidRequest, decode_frame

__all__ = [
    "CasCommand",
    "Command",
    "CommandResult",
    "DeleteCommand",
    "PutCommand",
    "WriteBatchCommand",
    "decode_command",
    "decode_result",
    "encode_command",
    "encode_result",
]


class _Value:
    """Value semantics for the command classes: equality, hashing and ``repr`` over
    ``_FIELDS``. The commands are plain slotted classes (not attrs classes) so that,
    compiled with mypyc, they are native classes: every replica builds one per applied
    write, and an attrs ``__init__`` stays interpreted. Treat them as immutable.
    atoll-core and atoll-replication have their own copy: a mypyc build covers one
    package, and a native class cannot inherit from another build's class."""

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
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__name__}({body})"


class PutCommand(_Value):
    """Set ``key`` to ``value``. ``acked``: every seq below this one has been answered to
    the client and may be forgotten (all commands)."""

    __slots__ = ("acked", "client_id", "key", "seq", "value")
    _FIELDS: ClassVar[tuple[str, ...]] = ("key", "value", "client_id", "seq", "acked")

    def __init__(
        self, key: bytes, value: bytes, client_id: str = "", seq: int = 0, acked: int = 0
    ) -> None:
        self.key = key
        self.value = value
        self.client_id = client_id
        self.seq = seq
        self.acked = acked


class DeleteCommand(_Value):
    """Remove ``key`` (absent keys are fine; ``existed`` in the result says which)."""

    __slots__ = ("acked", "client_id", "key", "seq")
    _FIELDS: ClassVar[tuple[str, ...]] = ("key", "client_id", "seq", "acked")

    def __init__(self, key: bytes, client_id: str = "", seq: int = 0, acked: int = 0) -> None:
        self.key = key
        self.client_id = client_id
        self.seq = seq
        self.acked = acked


class CasCommand(_Value):
    """Compare-and-set: if ``key`` currently holds ``expected`` (None = absent), set it to
    ``new`` (None = delete). The result says whether it swapped and what was there."""

    __slots__ = ("acked", "client_id", "expected", "key", "new", "seq")
    _FIELDS: ClassVar[tuple[str, ...]] = ("key", "expected", "new", "client_id", "seq", "acked")

    def __init__(
        self,
        key: bytes,
        expected: bytes | None,
        new: bytes | None,
        client_id: str = "",
        seq: int = 0,
        acked: int = 0,
    ) -> None:
        self.key = key
        self.expected = expected
        self.new = new
        self.client_id = client_id
        self.seq = seq
        self.acked = acked


class WriteBatchCommand(_Value):
    """Several puts (value) and deletes (None) applied atomically in one entry."""

    __slots__ = ("acked", "client_id", "items", "seq")
    _FIELDS: ClassVar[tuple[str, ...]] = ("items", "client_id", "seq", "acked")

    def __init__(
        self,
        items: tuple[tuple[bytes, bytes | None], ...],
        client_id: str = "",
        seq: int = 0,
        acked: int = 0,
    ) -> None:
        self.items = items
        self.client_id = client_id
        self.seq = seq
        self.acked = acked


Command = PutCommand | DeleteCommand | CasCommand | WriteBatchCommand


class CommandResult(_Value):
    """What applying a command produced.

    ``ok`` is False only for a failed compare-and-set; ``previous`` is the value before the
    command (for cas and delete), ``duplicate`` marks a retried command answered from the
    session table without applying it again.
    """

    __slots__ = ("duplicate", "existed", "ok", "previous")
    _FIELDS: ClassVar[tuple[str, ...]] = ("ok", "previous", "existed", "duplicate")

    def __init__(
        self,
        ok: bool = True,
        previous: bytes | None = None,
        existed: bool = False,
        duplicate: bool = False,
    ) -> None:
        self.ok = ok
        self.previous = previous
        self.existed = existed
        self.duplicate = duplicate


def _session(cmd: Command) -> dict[str, Any]:
    if not (cmd.client_id or cmd.seq or cmd.acked):
        return {}
    return {"c": cmd.client_id, "s": cmd.seq, "k": cmd.acked}


_MAGIC = 0xFF
_PUT, _DEL, _CAS, _BATCH = 1, 2, 3, 4
_HEAD = struct.Struct(">BBH")
_SESSION = struct.Struct(">QQ")
_U32 = struct.Struct(">I")
_U8U32 = struct.Struct(">BI")
_MAX_U64 = 2**64 - 1


def encode_command(cmd: Command) -> bytes:
    """Encode ``cmd`` as the payload of a Raft log entry (the binary layout above)."""
    client = cmd.client_id.encode()
    if len(client) > 0xFFFF:
        raise InvalidRequest(f"client id of {len(client)} bytes is longer than 65535")
    if not (0 <= cmd.seq <= _MAX_U64 and 0 <= cmd.acked <= _MAX_U64):
        raise InvalidRequest("command seq and acked must fit in 64 bits")
    if isinstance(cmd, PutCommand):
        kind = _PUT
        body = [_U32.pack(len(cmd.key)), cmd.key, cmd.value]
    elif isinstance(cmd, DeleteCommand):
        kind = _DEL
        body = [cmd.key]
    elif isinstance(cmd, CasCommand):
        kind = _CAS
        flags = (cmd.expected is not None) | (cmd.new is not None) << 1
        expected = cmd.expected or b""
        body = [
            _U8U32.pack(flags, len(cmd.key)),
            cmd.key,
            _U32.pack(len(expected)),
            expected,
            cmd.new or b"",
        ]
    else:
        kind = _BATCH
        body = [_U32.pack(len(cmd.items))]
        for key, value in cmd.items:
            v = value or b""
            body += (_U8U32.pack(value is not None, len(key)), key, _U32.pack(len(v)), v)
    return b"".join(
        (_HEAD.pack(_MAGIC, kind, len(client)), client, _SESSION.pack(cmd.seq, cmd.acked), *body)
    )


def decode_command(data: bytes) -> Command:
    """Decode a log entry payload; raises :class:`InvalidRequest` on anything malformed."""
    if not data or data[0] != _MAGIC:
        return _decode_frame_command(data)
    # Declared types let the compiled build use native integers (``unpack_from``
    # returns a tuple of Any).
    kind: int
    clen: int
    seq: int
    acked: int
    klen: int
    elen: int
    vlen: int
    flags: int
    present: int
    count: int
    try:
        _, kind, clen = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size + clen
        client = data[_HEAD.size : pos].decode()
        seq, acked = _SESSION.unpack_from(data, pos)
        pos += _SESSION.size
        if kind == _PUT:
            (klen,) = _U32.unpack_from(data, pos)
            pos += 4
            if pos + klen > len(data):
                raise ValueError("key runs past the end")
            return PutCommand(data[pos : pos + klen], data[pos + klen :], client, seq, acked)
        if kind == _DEL:
            return DeleteCommand(data[pos:], client, seq, acked)
        if kind == _CAS:
            flags, klen = _U8U32.unpack_from(data, pos)
            pos += 5
            key = data[pos : pos + klen]
            pos += klen
            (elen,) = _U32.unpack_from(data, pos)
            pos += 4
            if pos + elen > len(data) or flags > 3:
                raise ValueError("bad cas body")
            expected = data[pos : pos + elen] if flags & 1 else None
            new = data[pos + elen :] if flags & 2 else None
            return CasCommand(key, expected, new, client, seq, acked)
        if kind == _BATCH:
            (count,) = _U32.unpack_from(data, pos)
            pos += 4
            items: list[tuple[bytes, bytes | None]] = []
            for _ in range(count):
                present, klen = _U8U32.unpack_from(data, pos)
                pos += 5
                key = data[pos : pos + klen]
                pos += klen
                (vlen,) = _U32.unpack_from(data, pos)
                pos += 4
                value = data[pos : pos + vlen]
                pos += vlen
                if pos > len(data) or present > 1:
                    raise ValueError("bad batch item")
                items.append((key, value if present else None))
            if pos != len(data):
                raise ValueError("bytes left after the batch")
            return WriteBatchCommand(tuple(items), client, seq, acked)
    except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidRequest(f"malformed command: {exc}") from None
    raise InvalidRequest(f"unknown command kind {kind}")


def _decode_frame_command(data: bytes) -> Command:
    """The frame layout entries had before the binary one."""
    try:
        f = decode_frame(data)
    except FrameError as exc:
        raise InvalidRequest(f"log entry is not a command: {exc}") from exc
    h = f.header
    client = h.get("c", "")
    seq = h.get("s", 0)
    acked = h.get("k", 0)
    if (
        not isinstance(client, str)
        or not isinstance(seq, int)
        or not isinstance(acked, int)
        or seq < 0
        or acked < 0
    ):
        raise InvalidRequest("command session id must be a string, seq and acked non-negative")
    a = f.attachments
    if f.type == "put" and len(a) == 2:
        return PutCommand(a[0], a[1], client, seq, acked)
    if f.type == "del" and len(a) == 1:
        return DeleteCommand(a[0], client, seq, acked)
    if f.type == "cas" and len(a) == 3:
        return CasCommand(
            a[0], a[1] if h.get("e") else None, a[2] if h.get("n") else None, client, seq, acked
        )
    if f.type == "batch":
        present = h.get("p")
        if isinstance(present, list) and len(a) == 2 * len(present):
            items = tuple((a[2 * i], a[2 * i + 1] if p else None) for i, p in enumerate(present))
            return WriteBatchCommand(items, client, seq, acked)
    raise InvalidRequest(f"unknown or malformed command {f.type!r}")


_RES_OK, _RES_EXISTED, _RES_PREVIOUS = 1, 2, 4
_RESULT_PLAIN_OK = bytes((_MAGIC, _RES_OK))


def encode_result(res: CommandResult) -> bytes:
    """Encode a result (kept in the session table so a retry gets the same answer).

    Layout: ``u8 0xFF | u8 flags (1 ok, 2 existed, 4 previous present) | previous``.
    Results written before this layout are frames; :func:`decode_result` reads both.
    """
    if res.ok and res.previous is None and not res.existed:
        return _RESULT_PLAIN_OK
    flags = (
        (_RES_OK if res.ok else 0)
        | (_RES_EXISTED if res.existed else 0)
        | (_RES_PREVIOUS if res.previous is not None else 0)
    )
    return bytes((_MAGIC, flags)) + (res.previous or b"")


def decode_result(data: bytes) -> CommandResult:
    """Decode :func:`encode_result` output (either layout); raises InvalidRequest."""
    if data[:1] == b"\xff":
        if len(data) < 2:
            raise InvalidRequest("truncated command result")
        flags = data[1]
        return CommandResult(
            ok=bool(flags & _RES_OK),
            previous=data[2:] if flags & _RES_PREVIOUS else None,
            existed=bool(flags & _RES_EXISTED),
        )
    try:
        f = decode_frame(data)
    except FrameError as exc:
        raise InvalidRequest(f"malformed command result: {exc}") from exc
    h = f.header
    prev = f.attachments[0] if h.get("p") and f.attachments else None
    return CommandResult(ok=bool(h.get("o")), previous=prev, existed=bool(h.get("x")))
