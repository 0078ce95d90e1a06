"""The ReadIndex queue (Raft thesis 6.4): reads waiting for a heartbeat quorum.

Owns: pending read requests keyed by their context, the set of voters that acknowledged
the heartbeat carrying each one, and releasing them in order once a quorum has.
Never: decides whether a read may be served by lease, or sends anything.
"""

from __future__ import annotations

import collections

__all__ = ["ReadIndexQueue", "ReadRequest"]


class ReadRequest:
    """One pending read: the commit index when it arrived, and who asked."""

    __slots__ = ("acks", "context", "index", "requester")

    def __init__(
        self, index: int, context: bytes, requester: str, acks: set[str] | None = None
    ) -> None:
        self.index = index
        self.context = context
        self.requester = requester
        """The node that asked (the leader itself for a local read)."""
        self.acks: set[str] = set() if acks is None else acks

    def __repr__(self) -> str:
        return (
            f"ReadRequest(index={self.index}, context={self.context!r}, "
            f"requester={self.requester!r}, acks={sorted(self.acks)})"
        )


class ReadIndexQueue:
    """Pending reads in arrival order. A quorum acknowledging the heartbeat that carried
    request ``k`` confirms every request queued before ``k`` as well."""

    __slots__ = ("_by_ctx", "_order")

    def __init__(self) -> None:
        self._by_ctx: dict[bytes, ReadRequest] = {}
        self._order: collections.deque[bytes] = collections.deque()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, index: int, context: bytes, requester: str, leader: str) -> bool:
        """Queue a read; False if a read with this context is already pending."""
        if context in self._by_ctx:
            return False
        self._by_ctx[context] = ReadRequest(index, context, requester, {leader})
        self._order.append(context)
        return True

    def last_context(self) -> bytes | None:
        """The newest pending context (what the next heartbeat carries)."""
        return self._order[-1] if self._order else None

    def ack(self, voter: str, context: bytes) -> set[str] | None:
        """``voter`` acknowledged the heartbeat carrying ``context``; returns the acks so
        far, or None if no such read is pending."""
        req = self._by_ctx.get(context)
        if req is None:
            return None
        req.acks.add(voter)
        return req.acks

    def release_through(self, context: bytes) -> list[ReadRequest]:
        """Dequeue and return every request up to and including ``context``."""
        if context not in self._by_ctx:
            return []
        out: list[ReadRequest] = []
        while self._order:
            ctx = self._order.popleft()
            out.append(self._by_ctx.pop(ctx))
            if ctx == context:
                break
        return out

    def clear(self) -> list[ReadRequest]:
        """Drop every pending read (leadership lost); returns them."""
        out = [self._by_ctx[c] for c in self._order]
        self._by_ctx.clear()
        self._order.clear()
        return out
