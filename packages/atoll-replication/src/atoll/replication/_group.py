"""One Raft group hosted on a node, and the waiters its proposals and reads hand out.

Owns: :class:`RaftGroup` (the Raft node, log storage and state machine of one group,
proposals and linearizable reads started on it, and answering them as the host's
cycles commit, apply and confirm), :class:`_Waiter`, and the host cycle's loops over
its groups (tick, collect, stage, apply, advance).
Never: runs the Ready loop or does IO (that is :class:`atoll.replication.RaftHost`).

Free of async code so it compiles with mypyc (``NATIVE_MODULES``): every request starts
here. The waiting itself is in ``_waiting``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from atoll.core import NotLeader, Timeout, Unavailable, WriteBatch

from . import _waiting
from ._core import RaftNode
from ._engine_log import EngineLogStorage
from ._ready import Ready
from ._storage import GroupStateMachine
from ._types import Entry, EntryKind, HardState, Message

if TYPE_CHECKING:
    from ._host import RaftHost

__all__ = [
    "Applied",
    "RaftGroup",
    "Readies",
    "advance_readies",
    "apply_readies",
    "by_peer",
    "collect_readies",
    "commit_staged",
    "committed_count",
    "early_messages",
    "late_messages",
    "mark_durable",
    "needs_fsync",
    "serve_reads",
    "stage_readies",
    "take_messages",
    "tick_groups",
]

log = logging.getLogger("atoll.replication")


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
        """The last index whose state-machine writes reads see (kept here so a read does
        not ask the engine; the host raises it after each write or staging)."""
        self.deferred = False
        """Whether the state machine's writes go to the host's write-back buffer (see
        :class:`~atoll.replication.WriteBackEngine`) instead of the log's write."""

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


# ---------------------------------------------------------------- the host's per-group loops
#
# The Raft host's cycle walks every group several times (collect Readies, stage them,
# apply, advance); with 64 groups these loops are a large part of a busy node's
# interpreted time, so they live here, compiled with the native build, and the host
# (async, interpreted) calls them.

Readies = list[tuple[RaftGroup, Ready]]
"""The groups that had a Ready this cycle, with it."""
Applied = list[tuple[RaftGroup, tuple[Entry, ...], list[Any]]]
"""Per group that applied entries this cycle: the entries and their results."""


def tick_groups(groups: list[RaftGroup], quiesce_after_ticks: int) -> int:
    """Tick every awake group; a leader idle for ``quiesce_after_ticks`` ticks (0: never)
    that may quiesce does. Returns how many quiesced."""
    quiesced = 0
    for g in groups:
        node = g.node
        if node.quiesced:
            continue  # a sleeping group costs nothing
        node.tick()
        g.idle_ticks += 1
        if (
            quiesce_after_ticks
            and g.idle_ticks >= quiesce_after_ticks
            and node.is_leader
            and node.maybe_quiesce()
        ):
            quiesced += 1
    return quiesced


def take_messages(groups: list[RaftGroup]) -> list[Message]:
    """Every message the groups' cores queued since their last Ready (sent early)."""
    return [m for g in groups for m in g.node.take_messages()]


def collect_readies(groups: list[RaftGroup]) -> Readies:
    """Each group's pending Ready, for the groups that have one."""
    return [(g, g.node.ready()) for g in groups if g.node.has_ready()]


def needs_fsync(persisted: HardState, rd: Ready) -> bool:
    """Whether persisting ``rd`` must be fsynced before anything it promises leaves.

    Entries, snapshots, a new term or a vote must be durable first (etcd's MustSync). A
    hard state that only advances the commit index need not be: a commit index lost in a
    crash is learned again from the leader, so it rides along unsynced.
    """
    if rd.entries or (rd.snapshot is not None and not rd.snapshot.is_empty):
        return True
    hs = rd.hard_state
    return hs is not None and (hs.term != persisted.term or hs.vote != persisted.vote)


def stage_readies(readies: Readies, batch: WriteBatch) -> tuple[bool, bool, int]:
    """Stage every Ready's snapshot, entries and hard state into ``batch`` (restoring a
    snapshot into the state machine too). Returns (must fsync, a snapshot was restored,
    entries staged)."""
    must_sync = False
    restored = False
    persisted = 0
    for g, rd in readies:
        if rd.entries or rd.committed_entries or rd.read_states or rd.snapshot:
            g.idle_ticks = 0
        must_sync |= needs_fsync(g.storage.hard_state, rd)
        g.storage.stage(batch, hard_state=rd.hard_state, entries=rd.entries, snapshot=rd.snapshot)
        snap = rd.snapshot
        if snap is not None and not snap.is_empty:
            g.sm.restore(snap.data, batch)
            g.restores += 1
            log.info(
                "group %d: installing a snapshot at index %d (term %d) from the leader",
                g.group_id,
                snap.meta.index,
                snap.meta.term,
            )
            restored = True
        persisted += len(rd.entries)
    return must_sync, restored, persisted


def early_messages(readies: Readies) -> list[Message]:
    """The messages that may leave before the Readies are persisted."""
    return [m for _, rd in readies for m in rd.messages]


def late_messages(readies: Readies) -> list[Message]:
    """The messages that promise durability (sent once the Readies are persisted)."""
    return [m for _, rd in readies for m in rd.messages_after_persist]


def committed_count(readies: Readies) -> int:
    """Entries committed in these Readies."""
    return sum(len(rd.committed_entries) for _, rd in readies)


def apply_readies(
    readies: Readies, batch: WriteBatch, deferred: WriteBatch | None = None
) -> tuple[Applied, int, int]:
    """Apply every Ready's committed entries into ``batch`` (a deferred group's into
    ``deferred``, when given) and answer their proposals. Returns the results per
    group, the entries applied, and how many of them were proposals (normal entries
    with data)."""
    applied: Applied = []
    proposals = 0
    count = 0
    for g, rd in readies:
        entries = rd.committed_entries
        if entries:
            target = deferred if deferred is not None and g.deferred else batch
            results = g.sm.apply(entries, target)
            applied.append((g, entries, results))
            g._complete_proposals(entries, results)
            count += len(entries)
            for e in entries:
                if e.kind is EntryKind.NORMAL and e.data:
                    proposals += 1
        if rd.conf_state is not None:
            g.storage.stage_conf_state(batch, rd.conf_state)
    return applied, count, proposals


def commit_staged(readies: Readies) -> None:
    """The staged writes of every Ready are in the engine now."""
    for g, _ in readies:
        g.storage.commit_staged()


def mark_durable(applied: Applied) -> None:
    """The applied entries' writes are in the engine: raise each group's durable applied
    index."""
    for g, entries, _ in applied:
        g.durable_applied = max(g.durable_applied, entries[-1].index)


def serve_reads(applied: Applied) -> None:
    """Serve the reads the groups' applied state now allows."""
    for g, _, _ in applied:
        g._serve_reads()


def advance_readies(readies: Readies) -> None:
    """Tell every core its Ready is handled, and queue the reads it confirmed."""
    for g, rd in readies:
        g.node.advance(rd)
        g._add_read_states(rd)


def by_peer(msgs: Sequence[Message]) -> dict[str, list[Message]]:
    """``msgs`` grouped by destination, in order."""
    out: dict[str, list[Message]] = {}
    for m in msgs:
        dst = m.dst
        lst = out.get(dst)
        if lst is None:
            out[dst] = [m]
        else:
            lst.append(m)
    return out
