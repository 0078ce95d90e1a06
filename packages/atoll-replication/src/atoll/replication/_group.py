"""One Raft group hosted on a node, and the waiters its proposals and reads hand out.

Owns: :class:`RaftGroup` (the Raft node, log storage and state machine of one group,
proposals and linearizable reads started on it, and answering them as the host's
cycles commit, apply and confirm) and :class:`_Waiter`.
Never: runs the Ready loop or does IO (that is :class:`atoll.replication.RaftHost`).

Free of async code so it compiles with mypyc (``NATIVE_MODULES``): every request starts
here. The waiting itself is in ``_waiting``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from atoll.core import NotLeader, Timeout, Unavailable

from . import _waiting
from ._core import RaftNode
from ._engine_log import EngineLogStorage
from ._ready import Ready
from ._storage import GroupStateMachine
from ._types import Entry

if TYPE_CHECKING:
    from ._host import RaftHost

__all__ = ["RaftGroup"]


class _Waiter:
    """A proposal or read waiting for the host: an asyncio future, the cheapest wakeup
    there is (this is on every write's path; anyio events and cancel scopes cost several
    times more per request).

    :meth:`RaftGroup.start_proposal` and :meth:`RaftGroup.start_read` hand these out so
    a caller can start many operations and wait for them together (one timer for all);
    ``done`` says the outcome is in ``result`` or ``error``, :meth:`abandon` withdraws
    an operation its caller stopped waiting for.
    """

    __slots__ = ("_group", "_key", "done", "error", "future", "result", "term")

    def __init__(self, term: int, group: RaftGroup | None = None, key: int | bytes = 0) -> None:
        self.term = term
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done = False
        self.result: Any = None
        self.error: Exception | None = None
        self._group = group
        self._key = key

    def set(self) -> None:
        """Mark the wait over (result or error already filled in) and wake the waiter."""
        self.done = True
        if not self.future.done():
            self.future.set_result(None)

    def wait(self, timeout: float) -> Coroutine[Any, Any, bool]:
        """Wait up to ``timeout`` seconds (await the result); whether :meth:`set` was
        called."""
        return _waiting.wait(self, timeout)

    def abandon(self) -> None:
        """Stop tracking this operation (its caller gave up waiting); a no-op once done."""
        if not self.done and self._group is not None:
            self._group._forget(self._key)

    def timeout_error(self, timeout: float) -> Timeout:
        """The error for a caller that waited ``timeout`` seconds in vain."""
        gid = self._group.group_id if self._group is not None else "?"
        if isinstance(self._key, int):
            return Timeout(f"group {gid}: entry {self._key} not applied in {timeout}s")
        return Timeout(f"group {gid}: read index not confirmed in {timeout}s")


class RaftGroup:
    """One group hosted on this node: its Raft node, log storage and state machine."""

    def __init__(
        self,
        host: RaftHost,
        node: RaftNode,
        storage: EngineLogStorage,
        sm: GroupStateMachine,
    ) -> None:
        self.host = host
        self.node = node
        self.storage = storage
        self.sm = sm
        self._waiters: dict[int, _Waiter] = {}
        self._reads: dict[bytes, _Waiter] = {}
        self._read_index: dict[bytes, int] = {}
        self._read_ctx = itertools.count(1)
        self.idle_ticks = 0
        """Ticks since this group last persisted, applied or read anything."""
        self.restores = 0
        """Snapshots restored into this replica (a snapshot built before one is stale)."""
        self.durable_applied = sm.applied_index()
        """The last index whose state-machine writes the engine holds (kept here so a
        read does not ask the engine; the host raises it after each write)."""

    @property
    def group_id(self) -> int:
        """The group id."""
        return self.node.group_id

    @property
    def is_leader(self) -> bool:
        """Whether this node leads the group."""
        return self.node.is_leader

    @property
    def leader_id(self) -> str | None:
        """The leader this node knows of."""
        return self.node.leader_id

    def wake(self) -> None:
        """Wake this group if it sleeps (a request reached it: its leader may be gone)."""
        if self.node.quiesced:
            self.node.unquiesce()
            self.host.wake()

    def start_proposal(self, data: bytes) -> _Waiter:
        """Propose ``data`` and return the waiter its result will arrive in.

        Raises NotLeader if this node is not the leader, and the host's degradation error
        if it cannot accept writes. The waiter ends with the state machine's result once
        the entry is applied here, or with Unavailable if a newer leader replaced the
        entry (it will never apply).
        """
        if self.host.degraded is not None:
            err = self.host.degraded
            raise type(err)(f"group {self.group_id} cannot accept writes: {err.message}")
        ticket = self.node.propose(data)
        if ticket is None:
            raise NotLeader(leader_hint=self.node.leader_id)
        w = _Waiter(ticket.term, self, ticket.index)
        self._waiters[ticket.index] = w
        self.host.wake()
        return w

    def propose(self, data: bytes, *, timeout: float) -> Coroutine[Any, Any, Any]:
        """Replicate ``data`` and return the state machine's result once applied here
        (await the result).

        Raises what :meth:`start_proposal` raises, Timeout if the entry is not applied in
        time (its outcome is then unknown), and the waiter's error.
        """
        return _waiting.propose(self.start_proposal(data), timeout)

    def start_read(self) -> _Waiter | None:
        """Start a linearizable read (ReadIndex or lease): None if the local state may be
        read at once, else the waiter that ends when it may (or with an error).

        Fast path: a leader with a valid lease whose engine already holds everything
        committed answers at once, without a waiter or a Ready cycle; one whose engine
        does not yet hold it waits only for the applied state to reach the commit index.
        """
        if self.host.lease_reads:
            index = self.node.lease_read_index()
            if index is not None:
                if index <= self.durable_applied:
                    return None
                # The lease holds, so ``index`` is this read's read index (what a
                # lease ReadIndex would answer): wait here for the applied state to
                # reach it, without a round through the core and a Ready cycle.
                ctx = next(self._read_ctx).to_bytes(8, "big")
                w = _Waiter(0, self, ctx)
                self._reads[ctx] = w
                self._read_index[ctx] = index
                return w
        ctx = next(self._read_ctx).to_bytes(8, "big")
        w = _Waiter(0, self, ctx)
        self._reads[ctx] = w
        try:
            self.node.read_index(ctx, lease=self.host.lease_reads)
        except Exception:
            self._reads.pop(ctx, None)
            raise
        self.host.wake()
        return w

    def read_barrier(self, *, timeout: float) -> Coroutine[Any, Any, None]:
        """Wait until a linearizable read may be served locally (ReadIndex or lease);
        await the result."""
        return _waiting.read_barrier(self.start_read(), timeout)

    def _forget(self, key: int | bytes) -> None:
        if isinstance(key, int):
            self._waiters.pop(key, None)
        else:
            self._reads.pop(key, None)
            self._read_index.pop(key, None)

    # ------------------------------------------------------------ host callbacks

    def _complete_proposals(self, entries: Sequence[Entry], results: list[Any]) -> None:
        """Answer the proposals among ``entries``: they are committed (durable on a
        quorum) and their results are computed, which is all a write's reply needs."""
        for e, r in zip(entries, results, strict=True):
            w = self._waiters.pop(e.index, None)
            if w is None:
                continue
            if w.term == e.term:
                w.result = r
            else:
                w.error = Unavailable(
                    f"group {self.group_id}: entry {e.index} was replaced by a newer leader"
                )
            w.set()

    def _add_read_states(self, rd: Ready) -> None:
        for rs in rd.read_states:
            if rs.context in self._reads:
                self._read_index[rs.context] = rs.index
        self._serve_reads()

    def _serve_reads(self) -> None:
        applied = self.durable_applied
        if self.host._bg is None:
            # No state-machine write in flight: everything the core applied is written.
            applied = max(applied, self.node.applied_index)
        for ctx, index in list(self._read_index.items()):
            if index <= applied:
                self._read_index.pop(ctx)
                w = self._reads.pop(ctx, None)
                if w is not None:
                    w.set()

    def _fail_all(self, exc: Exception) -> None:
        for w in list(self._reads.values()):
            w.error = exc
            w.set()
        self._reads.clear()
        self._read_index.clear()

    def _on_leader_lost(self) -> None:
        # Pending reads were dropped by the core; proposals may still commit under the
        # next leader, so they keep waiting (and time out if they never apply).
        self._fail_all(NotLeader(leader_hint=self.node.leader_id))
