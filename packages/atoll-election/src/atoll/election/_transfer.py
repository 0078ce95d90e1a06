"""Leadership transfer bookkeeping (Raft thesis 3.10).

Owns: which node a leader is handing leadership to and how long it has been trying. The
leader stops accepting proposals, brings the target's log up to date, then sends it
TimeoutNow so it campaigns at once; the attempt is abandoned after one election timeout.
Never: sends anything or decides on its own to transfer; the node core drives it.
"""

from __future__ import annotations

__all__ = ["LeadershipTransfer"]


class LeadershipTransfer:
    """At most one transfer in progress: its target and the ticks it has taken."""

    __slots__ = ("elapsed", "limit", "target", "timeout_now_sent")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.target: str | None = None
        self.elapsed = 0
        self.timeout_now_sent = False

    @property
    def active(self) -> bool:
        """Whether a transfer is in progress."""
        return self.target is not None

    def start(self, target: str) -> None:
        """Begin transferring to ``target`` (replacing any earlier attempt)."""
        self.target = target
        self.elapsed = 0
        self.timeout_now_sent = False

    def tick(self) -> bool:
        """Advance one tick; True when the attempt has timed out (and is now aborted)."""
        if self.target is None:
            return False
        self.elapsed += 1
        if self.elapsed >= self.limit:
            self.abort()
            return True
        return False

    def abort(self) -> None:
        """Give up the transfer; the leader accepts proposals again."""
        self.target = None
        self.elapsed = 0
        self.timeout_now_sent = False
