"""The NATS message envelope: who sent a frame, and how a big frame is cut into chunks.

Owns: encoding and decoding the small binary prefix every Atoll NATS message carries,
and reassembling chunked frames with bounded memory.
Never: does IO; a malformed message raises :class:`atoll.core.FrameError`.

Layout (big-endian)::

    u8   kind        0xA1 a whole frame, 0xA2 one chunk of a frame
    u16  sender_len  then the sender's address (utf-8): where replies and answers go
    -- chunk only --
    u64  message id  unique per sender
    u32  index       0-based, chunks of one message arrive in order
    u32  count       chunks in the message
    u32  total       bytes of the whole encoded frame
    ...  data        the encoded frame (length prefix included), or this chunk of it
"""

from __future__ import annotations

import struct
import time

from atoll.core import FrameError, FrameTooLarge

__all__ = [
    "CHUNK",
    "WHOLE",
    "Reassembler",
    "chunk_overhead",
    "decode",
    "encode_chunk",
    "encode_whole",
]

WHOLE = 0xA1
CHUNK = 0xA2
_HEAD = struct.Struct(">BH")
_CHUNK = struct.Struct(">QIII")


def encode_whole(sender: bytes, data: bytes) -> bytes:
    """Envelope a whole encoded frame."""
    return _HEAD.pack(WHOLE, len(sender)) + sender + data


def encode_chunk(sender: bytes, info: tuple[int, int, int, int], part: bytes) -> bytes:
    """Envelope one chunk of a frame; ``info`` is ``(message id, index, count, total)``."""
    return _HEAD.pack(CHUNK, len(sender)) + sender + _CHUNK.pack(*info) + part


def chunk_overhead(sender: bytes) -> int:
    """Envelope bytes a chunk carries besides its data."""
    return _HEAD.size + len(sender) + _CHUNK.size


def decode(payload: bytes) -> tuple[int, str, tuple[int, int, int, int] | None, memoryview]:
    """Split a message into ``(kind, sender, chunk info or None, data)``."""
    if len(payload) < _HEAD.size:
        raise FrameError(f"nats message of {len(payload)} bytes is too short for an envelope")
    kind, slen = _HEAD.unpack_from(payload, 0)
    pos = _HEAD.size + slen
    if kind not in (WHOLE, CHUNK) or pos > len(payload):
        raise FrameError(f"nats message is not an Atoll envelope (kind byte 0x{kind:02x})")
    try:
        sender = bytes(payload[_HEAD.size : pos]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"nats envelope sender is not utf-8: {exc}") from None
    if not sender:
        raise FrameError("nats envelope has an empty sender")
    view = memoryview(payload)
    if kind == WHOLE:
        return kind, sender, None, view[pos:]
    if pos + _CHUNK.size > len(payload):
        raise FrameError("nats chunk envelope is truncated")
    info = _CHUNK.unpack_from(payload, pos)
    return kind, sender, info, view[pos + _CHUNK.size :]


class _Partial:
    __slots__ = ("count", "parts", "received", "seen", "total")

    def __init__(self, count: int, total: int, now: float) -> None:
        self.count = count
        self.total = total
        self.parts: list[bytes] = []
        self.received = 0
        self.seen = now


class Reassembler:
    """Collects chunks into whole frames, within a size limit and a memory budget.

    :param max_frame_bytes: a message declaring a bigger frame is refused.
    :param budget_bytes: partial messages held at once; the stalest are evicted beyond it.
    :param stale_after: seconds after which an incomplete message is forgotten.
    """

    def __init__(
        self, *, max_frame_bytes: int, budget_bytes: int, stale_after: float = 30.0
    ) -> None:
        self._max = max_frame_bytes
        self._budget = budget_bytes
        self._stale = stale_after
        self._partials: dict[tuple[str, int], _Partial] = {}
        self._held = 0
        self.evicted = 0

    def add(self, sender: str, info: tuple[int, int, int, int], part: memoryview) -> bytes | None:
        """Add one chunk; returns the whole frame's bytes when it is complete.

        :raises FrameError: the chunk is inconsistent (out of order, wrong sizes).
        :raises FrameTooLarge: the message declares a frame above the limit.
        """
        mid, index, count, total = info
        if total - 4 > self._max:
            raise FrameTooLarge(f"chunked frame of {total} bytes exceeds the limit of {self._max}")
        if count == 0 or index >= count:
            raise FrameError(f"nats chunk {index} of {count} is out of range")
        now = time.monotonic()
        key = (sender, mid)
        p = self._partials.get(key)
        if p is None:
            if index != 0:
                raise FrameError(f"nats chunk {index} of message {mid} from {sender} came first")
            self._sweep(now)
            p = self._partials[key] = _Partial(count, total, now)
        if index != len(p.parts) or count != p.count or total != p.total:
            self._drop(key)
            raise FrameError(f"nats chunk {index} of message {mid} from {sender} is out of order")
        if p.received + len(part) > total:
            self._drop(key)
            raise FrameError(f"nats chunks of message {mid} from {sender} exceed {total} bytes")
        p.parts.append(bytes(part))
        p.received += len(part)
        p.seen = now
        self._held += len(part)
        if len(p.parts) < count:
            self._evict_over_budget(keep=key)
            return None
        self._drop(key)
        if p.received != total:
            raise FrameError(f"nats message {mid} from {sender}: {p.received} of {total} bytes")
        return b"".join(p.parts)

    def _drop(self, key: tuple[str, int]) -> None:
        p = self._partials.pop(key, None)
        if p is not None:
            self._held -= p.received

    def _sweep(self, now: float) -> None:
        for key in [k for k, p in self._partials.items() if now - p.seen > self._stale]:
            self._drop(key)
            self.evicted += 1

    def _evict_over_budget(self, keep: tuple[str, int]) -> None:
        while self._held > self._budget:
            victims = sorted((p.seen, k) for k, p in self._partials.items() if k != keep)
            if not victims:
                return
            self._drop(victims[0][1])
            self.evicted += 1

    @property
    def pending(self) -> int:
        """Incomplete messages held."""
        return len(self._partials)
