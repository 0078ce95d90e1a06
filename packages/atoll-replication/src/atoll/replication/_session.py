"""The client session table: so a retried command is applied exactly once (thesis 6.3).

Owns: per client, the responses to its recent commands by sequence number, the client's
acknowledgement of responses it has received (so they can be forgotten), and
deterministic eviction of idle sessions. It lives in the replicated state machine: every
replica applies the same commands in the same order, so every replica's table is equal,
and it is saved in and restored from snapshots.
Never: reads a clock (eviction is by log index, identical on every replica) or does IO.
"""

from __future__ import annotations

import enum

import attrs
import orjson

from atoll.core import CorruptData

__all__ = ["SessionOutcome", "SessionTable"]


class SessionOutcome(enum.Enum):
    """What the table says about a command before it is applied."""

    NEW = "new"
    """Not applied yet: apply it, then :meth:`SessionTable.record` the response."""
    DUPLICATE = "duplicate"
    """Already applied: answer with the cached response, do not apply again."""
    EXPIRED = "expired"
    """Applied long ago and its response is forgotten (the client acknowledged it, or
    its session was evicted): answer with an error, never apply again."""


@attrs.define(slots=True)
class _Session:
    responses: dict[int, bytes] = attrs.field(factory=dict)
    lowest_unacked: int = 0
    last_index: int = 0
    """Log index of the client's latest command (for eviction)."""


class SessionTable:
    """Per-client command deduplication with bounded memory.

    A client numbers its commands ``1, 2, 3 ...`` and sends with each one the lowest
    sequence number it has no response for yet; responses below that are dropped.
    """

    __slots__ = ("_sessions", "max_sessions")

    def __init__(self, max_sessions: int = 100_000) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.max_sessions = max_sessions
        self._sessions: dict[str, _Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def check(self, client_id: str, seq: int) -> tuple[SessionOutcome, bytes | None]:
        """Whether command ``seq`` of ``client_id`` was applied, and its response."""
        s = self._sessions.get(client_id)
        if s is None:
            return SessionOutcome.NEW, None
        if seq in s.responses:
            return SessionOutcome.DUPLICATE, s.responses[seq]
        if seq < s.lowest_unacked or (s.responses and seq < min(s.responses)):
            return SessionOutcome.EXPIRED, None
        return SessionOutcome.NEW, None

    def record(
        self, client_id: str, seq: int, response: bytes, *, lowest_unacked: int, index: int
    ) -> None:
        """Remember ``response`` to ``seq``; forget responses below ``lowest_unacked``.

        ``index`` is the log index of the command; it orders eviction when the table is
        full (the session idle the longest, in log order, goes first).
        """
        s = self._sessions.get(client_id)
        if s is None:
            if len(self._sessions) >= self.max_sessions:
                victim = min(self._sessions, key=lambda c: (self._sessions[c].last_index, c))
                del self._sessions[victim]
            s = self._sessions[client_id] = _Session()
        s.responses[seq] = response
        s.lowest_unacked = max(s.lowest_unacked, lowest_unacked)
        for old in [q for q in s.responses if q < s.lowest_unacked]:
            del s.responses[old]
        s.last_index = max(s.last_index, index)

    def to_bytes(self) -> bytes:
        """Serialize for a state-machine snapshot."""
        doc = {
            c: [s.lowest_unacked, s.last_index, {str(q): r.hex() for q, r in s.responses.items()}]
            for c, s in sorted(self._sessions.items())
        }
        return orjson.dumps({"m": self.max_sessions, "s": doc})

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionTable:
        """Restore a table saved with :meth:`to_bytes`."""
        try:
            doc = orjson.loads(data)
            table = cls(int(doc["m"]))
            for client, (low, last, resp) in doc["s"].items():
                table._sessions[str(client)] = _Session(
                    {int(q): bytes.fromhex(r) for q, r in resp.items()}, int(low), int(last)
                )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptData(f"session table snapshot is unreadable: {exc}") from exc
        return table
