"""Commands the key-value state machine applies, and their compact encoding.

Owns: the write commands clients send through Raft (put, delete, compare-and-set, batch)
and their byte encoding inside a log entry, and the command results.
Never: applies anything (see ``_statemachine``) or does IO.

A command is encoded as an :class:`atoll.core.Frame` (orjson header, raw attachments),
so keys and values are never base64-encoded and the same codec guards untrusted input.
Every command carries the client's session id and sequence number so a retried command
is applied once (Raft thesis section 6.3).
"""

from __future__ import annotations

from typing import Any

import attrs

from atoll.core import Frame, FrameError, InvalidRequest, decode_frame, encode_frame

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


@attrs.frozen(slots=True)
class PutCommand:
    """Set ``key`` to ``value``."""

    key: bytes
    value: bytes
    client_id: str = ""
    seq: int = 0
    acked: int = 0
    """Every seq below this one has been answered to the client and may be forgotten."""


@attrs.frozen(slots=True)
class DeleteCommand:
    """Remove ``key`` (absent keys are fine; ``existed`` in the result says which)."""

    key: bytes
    client_id: str = ""
    seq: int = 0
    acked: int = 0


@attrs.frozen(slots=True)
class CasCommand:
    """Compare-and-set: if ``key`` currently holds ``expected`` (None = absent), set it to
    ``new`` (None = delete). The result says whether it swapped and what was there."""

    key: bytes
    expected: bytes | None
    new: bytes | None
    client_id: str = ""
    seq: int = 0
    acked: int = 0


@attrs.frozen(slots=True)
class WriteBatchCommand:
    """Several puts (value) and deletes (None) applied atomically in one entry."""

    items: tuple[tuple[bytes, bytes | None], ...]
    client_id: str = ""
    seq: int = 0
    acked: int = 0


Command = PutCommand | DeleteCommand | CasCommand | WriteBatchCommand


@attrs.frozen(slots=True)
class CommandResult:
    """What applying a command produced.

    ``ok`` is False only for a failed compare-and-set; ``previous`` is the value before the
    command (for cas and delete), ``duplicate`` marks a retried command answered from the
    session table without applying it again.
    """

    ok: bool = True
    previous: bytes | None = None
    existed: bool = False
    duplicate: bool = False


def _session(cmd: Command) -> dict[str, Any]:
    if not (cmd.client_id or cmd.seq or cmd.acked):
        return {}
    return {"c": cmd.client_id, "s": cmd.seq, "k": cmd.acked}


def encode_command(cmd: Command) -> bytes:
    """Encode ``cmd`` as the payload of a Raft log entry."""
    h = _session(cmd)
    if isinstance(cmd, PutCommand):
        return encode_frame(Frame("put", h, (cmd.key, cmd.value)))
    if isinstance(cmd, DeleteCommand):
        return encode_frame(Frame("del", h, (cmd.key,)))
    if isinstance(cmd, CasCommand):
        h["e"] = cmd.expected is not None
        h["n"] = cmd.new is not None
        return encode_frame(Frame("cas", h, (cmd.key, cmd.expected or b"", cmd.new or b"")))
    atts: list[bytes] = []
    present: list[int] = []
    for key, value in cmd.items:
        atts.append(key)
        atts.append(value or b"")
        present.append(0 if value is None else 1)
    h["p"] = present
    return encode_frame(Frame("batch", h, tuple(atts)))


def decode_command(data: bytes) -> Command:
    """Decode a log entry payload; raises :class:`InvalidRequest` on anything malformed."""
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


def encode_result(res: CommandResult) -> bytes:
    """Encode a result (kept in the session table so a retry gets the same answer)."""
    h = {"o": res.ok, "x": res.existed, "p": res.previous is not None}
    return encode_frame(Frame("res", h, (res.previous or b"",)))


def decode_result(data: bytes) -> CommandResult:
    """Decode :func:`encode_result` output."""
    f = decode_frame(data)
    h = f.header
    prev = f.attachments[0] if h.get("p") and f.attachments else None
    return CommandResult(ok=bool(h.get("o")), previous=prev, existed=bool(h.get("x")))
