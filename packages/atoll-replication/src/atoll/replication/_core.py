"""The Raft node: a pure, deterministic state machine (etcd-io/raft's design, in Python).

Owns: one group member's Raft protocol — roles and their transitions, the term and vote
rules, elections with pre-vote, check-quorum and leases, replication with flow control,
commit, chunked InstallSnapshot, ReadIndex, leadership transfer, membership changes —
and the ``Ready`` batches it hands to its shell.

Inputs: :meth:`RaftNode.tick`, :meth:`RaftNode.step` (a message), :meth:`RaftNode.propose`
and the other request methods. Outputs: :meth:`RaftNode.ready`, acknowledged with
:meth:`RaftNode.advance` after the shell persisted, sent and applied it.

Per-role behaviour is swapped as function values (``self._step``, ``self._tick``); every
role transition is one of the ``_become_*`` methods below.

Never: does IO, reads the wall clock or the global ``random`` module (time is ticks plus an
injected :class:`atoll.core.Clock`; randomness an injected RNG), or writes storage.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import attrs

from atoll.core import Clock, InvalidRequest, LeaderChange, NotLeader, Rng, Unavailable
from atoll.election import (
    ElectionTimer,
    LeadershipTransfer,
    LeaseTracker,
    VoteRequest,
    VoteResult,
    VoteTally,
    ignores_vote_request,
    may_grant_vote,
)

from ._confchange import apply_conf_change, decode_conf_change, encode_conf_change
from ._config import RaftConfig
from ._log import RaftLog
from ._progress import Progress, ProgressState, ProgressTracker
from ._readonly import ReadIndexQueue, ReadRequest
from ._ready import Ready, ReadyEvent
from ._storage import LogStorage, SnapshotTemporarilyUnavailable
from ._types import (
    ConfChange,
    ConfChangeOp,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ProposalTicket,
    ReadState,
    Role,
    RoleChange,
    Snapshot,
    SnapshotMeta,
)

__all__ = ["TRANSFER_CONTEXT", "PeerStatus", "RaftNode", "Status"]

TRANSFER_CONTEXT = b"atoll-transfer"
QUIESCE_CONTEXT = b"atoll-quiesce"
"""Context of the heartbeat with which a leader tells its followers to go quiet."""
"""Context of a vote request forced by TimeoutNow: voters answer it despite leader
stickiness."""

MT = MessageType

# Sent by a leader about its own, already durable term: may go out before the Ready's
# persistence completes. Everything else waits for it (votes, acknowledgements).
# Messages that promise nothing durable, so they may leave before the Ready that holds
# them is persisted (etcd does the same). A heartbeat response in particular must not wait
# behind a slow fsync: the leader's check-quorum and lease depend on it.
_IMMEDIATE = frozenset(
    {MT.APP, MT.HEARTBEAT, MT.HEARTBEAT_RESP, MT.SNAP, MT.TIMEOUT_NOW, MT.READ_INDEX_RESP}
)


@attrs.frozen(slots=True)
class PeerStatus:
    """The leader's view of one member (for status pages and tests)."""

    match: int
    next: int
    state: str
    recent_active: bool
    is_learner: bool
    inflight: int
    snapshot_bytes_acked: int = 0


@attrs.frozen(slots=True)
class Status:
    """A point-in-time summary of a node."""

    node_id: str
    group_id: int
    role: Role
    term: int
    vote: str | None
    leader_id: str | None
    commit: int
    applied: int
    last_index: int
    conf_state: ConfState
    transfer_target: str | None
    peers: dict[str, PeerStatus]


class _SnapshotReceive:
    __slots__ = ("buf", "meta")

    def __init__(self, meta: SnapshotMeta) -> None:
        self.meta = meta
        self.buf = bytearray()


class RaftNode:
    """One member of one Raft group.

    ``storage`` is read when the node starts and whenever it needs durable entries; the
    shell writes it while handling each :class:`Ready`. ``rng`` draws election timeouts;
    ``clock`` (monotonic seconds) is only used for leader leases and may be omitted, in
    which case lease reads fall back to ReadIndex.
    """

    def __init__(
        self,
        config: RaftConfig,
        storage: LogStorage,
        *,
        rng: Rng,
        clock: Clock | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.id = config.node_id
        self.group_id = config.group_id
        self.storage = storage
        self._clock = clock
        self.log = RaftLog(storage, max_apply_bytes=config.max_apply_bytes, applied=config.applied)
        hs, cs = storage.initial_state()
        if hs.commit:
            if hs.commit > self.log.last_index():
                raise InvalidRequest(
                    f"stored commit {hs.commit} is past the last stored index "
                    f"{self.log.last_index()}: the log storage is corrupt"
                )
            self.log.commit_to(hs.commit)
        self.term = hs.term
        self.vote: str | None = hs.vote
        self.lead: str | None = None
        self.role = Role.FOLLOWER
        self.tracker = ProgressTracker(config.max_inflight_msgs, config.max_inflight_bytes)
        self.tracker.apply_conf(cs, self.log.last_index() + 1)
        self.timer = ElectionTimer(config.election_ticks, rng)
        self.heartbeat_elapsed = 0
        self.votes = VoteTally()
        self.transfer = LeadershipTransfer(config.election_ticks)
        self.lease = LeaseTracker(config.lease_duration, config.max_clock_drift)
        self.reads = ReadIndexQueue()
        self.pending_conf_index = 0
        self._pending_reads: list[tuple[bytes, str]] = []
        self._uncommitted: collections.deque[tuple[int, int]] = collections.deque()
        self._uncommitted_bytes = 0
        self._msgs: list[Message] = []
        self._msgs_after: list[Message] = []
        self._read_states: list[ReadState] = []
        self._events: list[ReadyEvent] = []
        self._conf_changed: ConfState | None = None
        self._need_bcast = False
        self._prev_hs = hs
        self._outstanding: Ready | None = None
        # A restarted node may have acknowledged a leader before it crashed: honour that
        # leader's possible lease for one election timeout. A brand-new member cannot have.
        self._booting = hs.term > 0
        self.quiesced = False
        """Whether this group sleeps (no ticks, no heartbeats) until woken."""
        self._snap_recv: _SnapshotReceive | None = None
        self._last_snapshot_request = storage.first_index() - 1
        self._term_start = 0
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self._reset(self.term)

    # ================================================================== introspection

    @property
    def leader_id(self) -> str | None:
        """The leader this node follows (itself when leading), if known."""
        return self.lead

    @property
    def is_leader(self) -> bool:
        """Whether this node currently leads the group."""
        return self.role is Role.LEADER

    @property
    def commit_index(self) -> int:
        """The highest index known to be committed."""
        return self.log.committed

    @property
    def applied_index(self) -> int:
        """The highest index the shell reported applied (via ``advance``)."""
        return self.log.applied

    @property
    def conf_state(self) -> ConfState:
        """The membership in force (the latest one applied)."""
        return self.tracker.conf

    def status(self) -> Status:
        """A summary of this node (the peer map is filled only on the leader)."""
        peers: dict[str, PeerStatus] = {}
        if self.role is Role.LEADER:
            for node in sorted(self.tracker.progress):
                pr = self.tracker.progress[node]
                peers[node] = PeerStatus(
                    pr.match,
                    pr.next,
                    pr.state.value,
                    pr.recent_active,
                    pr.is_learner,
                    len(pr.inflights),
                    pr.transfer.acked if pr.transfer else 0,
                )
        return Status(
            self.id,
            self.group_id,
            self.role,
            self.term,
            self.vote,
            self.lead,
            self.log.committed,
            self.log.applied,
            self.log.last_index(),
            self.tracker.conf,
            self.transfer.target,
            peers,
        )

    def lease_expiry(self) -> float:
        """When this leader's lease ends by its clock (``-inf`` if it holds none)."""
        if not self._may_use_lease():
            return -math.inf
        assert self._clock is not None
        now = self._clock.now()
        return self.lease.expiry(self.tracker.config, self.id, now)

    def compaction_floor(self) -> int:
        """The highest index the shell may compact the log to right now.

        Never past what is applied, and never past a snapshot a follower is still
        downloading: the leader keeps the entries after it, so the follower catches up
        with appends once it has installed the snapshot (InstallSnapshot terminates).
        """
        floor = self.log.applied
        if self.role is Role.LEADER:
            for pr in self.tracker.progress.values():
                if pr.state is ProgressState.SNAPSHOT:
                    floor = min(floor, pr.pending_snapshot)
        return floor

    # ================================================================== inputs

    def tick(self) -> None:
        """Advance logical time by one tick (nothing happens while quiesced)."""
        if self.quiesced:
            return
        self._tick()

    def campaign(self) -> None:
        """Start an election now (with a pre-vote first if configured)."""
        self.unquiesce()
        if self.role is not Role.LEADER:
            self._hup(transfer=False)

    # ------------------------------------------------------------------ quiescence

    def maybe_quiesce(self) -> bool:
        """Put an idle group to sleep (CockroachDB's quiescence); leader only.

        Allowed when every member has the whole log, everything is committed and applied,
        and nothing is pending (reads, transfers, membership changes, proposals). The
        leader then stops heartbeating and tells its followers, with a final heartbeat,
        to stop their election timers: an idle group costs no ticks and no messages. Any
        proposal, read or message wakes it; the shell wakes followers when the failure
        detector declares their leader dead (:meth:`unquiesce`). Returns whether the
        group went quiet.
        """
        if self.quiesced or not self._quiescable():
            return False
        self.quiesced = True
        self._bcast_heartbeat(QUIESCE_CONTEXT)
        return True

    def unquiesce(self) -> None:
        """Wake the group: tick again; a leader heartbeats at once so followers wake too."""
        if not self.quiesced:
            return
        self.quiesced = False
        if self.role is Role.LEADER:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quiescable(self) -> bool:
        if self.role is not Role.LEADER or self._outstanding is not None:
            return False
        last = self.log.last_index()
        if (
            self.transfer.active
            or self.reads.last_context() is not None
            or self._pending_reads
            or self.log.unstable.entries
            or self.log.committed != last
            or self.log.applied != last
            or self.pending_conf_index > self.log.applied
            or self.tracker.conf.is_joint
            or self._need_bcast
        ):
            return False
        return all(
            pr.match == last and pr.state is ProgressState.REPLICATE and not len(pr.inflights)
            for node, pr in self.tracker.progress.items()
            if node != self.id
        )

    def step(self, m: Message) -> None:
        """Handle one message from a peer."""
        if m.group_id != self.group_id:
            raise InvalidRequest(
                f"message for group {m.group_id} delivered to group {self.group_id}"
            )
        if m.dst != self.id:
            raise InvalidRequest(f"message for {m.dst!r} delivered to {self.id!r}")
        if m.src == self.id:
            return
        if self.quiesced and not (
            m.type is MT.HEARTBEAT_RESP or (m.type is MT.HEARTBEAT and m.context == QUIESCE_CONTEXT)
        ):
            # Heartbeat responses (late answers to the heartbeats before the quiesce
            # one) carry no work; anything else wakes the group.
            self.unquiesce()
        if m.term == 0:
            pass  # forwarded proposals and read requests carry no term
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE) and ignores_vote_request(
                check_quorum=self.config.check_quorum,
                leader=self.lead,
                election_elapsed=self.timer.elapsed,
                election_ticks=self.config.election_ticks,
                forced=m.context == TRANSFER_CONTEXT,
                booting=self._booting,
            ):
                return
            if m.type is MT.PRE_VOTE or (m.type is MT.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote never changes our term
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (
                MT.APP,
                MT.HEARTBEAT,
            ):
                # A stale leader learns our term and steps down. Without this, a node
                # whose pre-votes fail (its log is behind) could never bump a partitioned
                # old leader's term, and the group could stay split.
                self._send(MT.APP_RESP, m.src)
            elif m.type is MT.PRE_VOTE:
                self._send(MT.PRE_VOTE_RESP, m.src, reject=True)
            return
        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
            return
        self._step(m)

    def propose(self, data: bytes) -> ProposalTicket | None:
        """Propose ``data`` for the log.

        On the leader, returns where the entry landed (it is batched with every other
        proposal until the next :meth:`ready`). On a follower with ``forward_proposals``,
        forwards it to the leader and returns None (the session table dedups retries).
        Raises :class:`NotLeader` (with a hint) when it cannot, and
        :class:`Unavailable` while a transfer is in progress or too many bytes are
        uncommitted.
        """
        self.unquiesce()
        return self._propose(Entry(0, 0, bytes(data)))

    def propose_conf_change(self, cc: ConfChange) -> ProposalTicket:
        """Propose a membership change (leader only; one pending change at a time)."""
        self.unquiesce()
        if self.role is not Role.LEADER:
            raise NotLeader(leader_hint=self.lead, group_id=self.group_id)
        if self.pending_conf_index > self.log.applied:
            raise Unavailable(
                f"membership change at index {self.pending_conf_index} is not applied yet "
                f"(applied {self.log.applied}); retry once it is"
            )
        apply_conf_change(self.tracker.conf, cc)  # raises InvalidRequest if invalid now
        ticket = self._propose(Entry(0, 0, encode_conf_change(cc), EntryKind.CONF_CHANGE))
        assert ticket is not None
        self.pending_conf_index = ticket.index
        return ticket

    def read_index(self, context: bytes, *, lease: bool = False) -> None:
        """Request a linearizable read; the answer arrives as a ``ReadState`` carrying
        ``context`` (which must be unique among pending reads).

        With ``lease=True`` a leader holding a valid lease answers at once; otherwise
        (or once the lease has expired) the read waits for a heartbeat round confirmed
        by a quorum. A follower asks its leader. Raises :class:`NotLeader` when no leader
        is known. Pending reads are dropped when leadership changes: the shell should
        fail them on a ``LeaderChange`` event.
        """
        if not context:
            raise InvalidRequest("a read context must be non-empty bytes")
        self.unquiesce()
        if self.role is Role.LEADER:
            if lease and self.config.lease_reads and self._lease_valid():
                self._read_states.append(ReadState(self.log.committed, context))
                return
            self._leader_read_index(context, self.id)
        elif self.lead is not None:
            self._send(MT.READ_INDEX, self.lead, term=0, context=context)
        else:
            raise NotLeader(leader_hint=None, group_id=self.group_id)

    def lease_read_index(self) -> int | None:
        """The read index a leader holding a valid lease may serve at once, else None.

        The synchronous form of ``read_index(ctx, lease=True)`` for the fast path: no
        ReadState is queued, so the shell can answer without waiting for a Ready cycle.
        A quiesced group never holds a lease here (it must wake and heartbeat first).
        """
        if self.quiesced or not self._lease_valid():
            return None
        return self.log.committed

    def transfer_leadership(self, target: str) -> None:
        """Hand leadership to ``target`` (thesis 3.10); proposals are refused meanwhile.

        The attempt is abandoned after one election timeout.
        """
        self.unquiesce()
        if self.role is not Role.LEADER:
            raise NotLeader(leader_hint=self.lead, group_id=self.group_id)
        if target == self.id:
            return
        pr = self.tracker.progress.get(target)
        if pr is None or not self.tracker.is_voter(target):
            raise InvalidRequest(
                f"cannot transfer leadership to {target!r}: not a voter of group "
                f"{self.group_id} (voters {sorted(self.tracker.voters)})"
            )
        if self.transfer.target == target:
            return
        self.transfer.start(target)
        self.lease.reset()
        if pr.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._maybe_send_append(target)

    def report_unreachable(self, peer: str) -> None:
        """The transport could not deliver to ``peer``: stop pipelining to it."""
        pr = self.tracker.progress.get(peer)
        if self.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    # ================================================================== Ready loop

    def take_messages(self) -> tuple[Message, ...]:
        """Drain the messages that may be sent right now, even while a Ready is
        outstanding (heartbeats and their responses, appends, snapshot chunks).

        A shell calls this when it ticks during a long persist, so a slow fsync never
        delays heartbeats; messages that need durability stay for the next Ready.
        """
        out = tuple(self._msgs)
        self._msgs.clear()
        return out

    def has_ready(self) -> bool:
        """Whether :meth:`ready` has something (False while a Ready is outstanding)."""
        if self._outstanding is not None:
            return False
        return bool(
            (self._need_bcast and self.role is Role.LEADER)
            or self._msgs
            or self._msgs_after
            or self._read_states
            or self._events
            or self._conf_changed is not None
            or self._hard_state() != self._prev_hs
            or self.log.unstable.entries
            or self.log.unstable.snapshot is not None
            or self.log.has_next_committed()
            or self._snapshot_due()
        )

    def ready(self) -> Ready:
        """Collect everything the shell must do now. Call :meth:`advance` afterwards;
        no other ``ready()`` is allowed until then (stepping and ticking are)."""
        if self._outstanding is not None:
            raise InvalidRequest("ready() called again before advance() of the previous Ready")
        committed = tuple(self.log.next_committed())
        if committed:
            self.log.applying = committed[-1].index
            for e in committed:
                if e.kind is EntryKind.CONF_CHANGE:
                    self._apply_conf_entry(e)
        if self._need_bcast and self.role is Role.LEADER:
            self._bcast_append()
        self._need_bcast = False
        hs = self._hard_state()
        snap_req: int | None = None
        if self._snapshot_due():
            snap_req = self.log.applied
            self._last_snapshot_request = snap_req
        rd = Ready(
            hard_state=hs if hs != self._prev_hs else None,
            entries=tuple(self.log.unstable.entries),
            snapshot=self.log.unstable.snapshot,
            messages=tuple(self._msgs),
            messages_after_persist=tuple(self._msgs_after),
            committed_entries=committed,
            read_states=tuple(self._read_states),
            conf_state=self._conf_changed,
            events=tuple(self._events),
            snapshot_request=snap_req,
        )
        self._prev_hs = hs
        self._msgs.clear()
        self._msgs_after.clear()
        self._read_states.clear()
        self._events.clear()
        self._conf_changed = None
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The shell finished ``rd``: persisted, sent and applied it."""
        if rd is not self._outstanding:
            raise InvalidRequest("advance() must be given the Ready that ready() returned")
        self._outstanding = None
        if rd.snapshot is not None:
            self.log.stable_snap_to(rd.snapshot.meta.index)
            self.log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
        if self.role is Role.LEADER:
            me = self.tracker.progress.get(self.id)
            if me is not None and me.maybe_update(self.log.stable_last_index()):
                self._maybe_commit()
            self._leader_after_apply()

    # ================================================================== transitions

    def _become_follower(self, term: int, lead: str | None) -> None:
        self._step = self._step_follower
        self._tick = self._tick_election
        self._transition(Role.FOLLOWER, term, lead)

    def _become_pre_candidate(self) -> None:
        # A pre-candidate keeps its term and vote: nothing about it is durable.
        self._step = self._step_candidate
        self._tick = self._tick_election
        self.votes.clear()
        self.timer.reset()
        prev_lead = self.lead
        self.lead = None
        self._announce(Role.PRE_CANDIDATE, prev_lead)

    def _become_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise AssertionError("a leader cannot become a candidate")
        self._step = self._step_candidate
        self._tick = self._tick_election
        self._transition(Role.CANDIDATE, self.term + 1, None)
        self.vote = self.id

    def _become_leader(self) -> None:
        if self.role is Role.FOLLOWER:
            raise AssertionError("a follower cannot become leader without an election")
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        self._transition(Role.LEADER, self.term, self.id)
        me = self.tracker.progress.get(self.id)
        if me is not None:
            me.become_replicate()
        self.pending_conf_index = self.log.last_index()
        self._term_start = self.log.last_index() + 1
        # A no-op of the new term: committing it commits everything before it (5.4.2),
        # and it is what ReadIndex waits for before it may answer.
        self._append([Entry(0, 0)])

    def _transition(self, role: Role, term: int, lead: str | None) -> None:
        prev_lead = self.lead
        self._reset(term)
        self.lead = lead
        self._announce(role, prev_lead)

    def _announce(self, role: Role, prev_lead: str | None) -> None:
        if role is not self.role:
            self.role = role
            self._events.append(RoleChange(self.group_id, self.id, role, self.term))
        if self.lead != prev_lead:
            self._events.append(LeaderChange(self.group_id, self.lead, self.term))

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self.timer.set_handicap(self._priority_handicap())
        self.timer.reset()
        self.heartbeat_elapsed = 0
        self.transfer.abort()
        self.votes.clear()
        self.lease.reset()
        self.reads.clear()
        self._pending_reads.clear()
        self.pending_conf_index = 0
        self._uncommitted.clear()
        self._uncommitted_bytes = 0
        self._need_bcast = False
        last = self.log.last_index()
        for node, pr in self.tracker.progress.items():
            pr.reset_state(ProgressState.PROBE)
            pr.match = self.log.stable_last_index() if node == self.id else 0
            pr.next = last + 1
            pr.recent_active = True

    def _set_leader_heard(self, lead: str) -> None:
        self.timer.elapsed = 0
        self._booting = False
        if self.lead != lead:
            self.lead = lead
            self._events.append(LeaderChange(self.group_id, lead, self.term))

    # ================================================================== ticks

    def _tick_election(self) -> None:
        fired = self.timer.tick()
        if self._booting and self.timer.past_base:
            self._booting = False
        if fired and self._promotable():
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.timer.elapsed += 1
        if self.timer.elapsed >= self.config.election_ticks:
            self.timer.elapsed = 0
            if self.config.check_quorum and not self.tracker.quorum_active():
                self._become_follower(self.term, None)
                return
            self._maybe_priority_transfer()
            if self.config.check_quorum:
                for node, pr in self.tracker.progress.items():
                    if node != self.id:
                        pr.recent_active = False
        self.transfer.tick()
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(periodic=True)

    # ================================================================== elections

    def _promotable(self) -> bool:
        return self.tracker.is_voter(self.id) and self.log.unstable.snapshot is None

    def _hup(self, *, transfer: bool) -> None:
        if not self._promotable():
            return
        if self._has_unapplied_conf_change():
            # Campaigning under a membership we have not applied could elect a leader
            # by the wrong quorum; wait until it is applied.
            return
        self._campaign(pre=self.config.pre_vote and not transfer, transfer=transfer)

    def _has_unapplied_conf_change(self) -> bool:
        lo = max(self.log.applied + 1, self.log.first_index())
        if lo > self.log.committed:
            return False
        return any(
            e.kind is EntryKind.CONF_CHANGE for e in self.log.slice(lo, self.log.committed + 1)
        )

    def _campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            kind, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            kind, term = MT.VOTE, self.term
        self.votes.record(self.id, True)
        if self.votes.result(self.tracker.config) is VoteResult.WON:
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        ctx = TRANSFER_CONTEXT if transfer else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for node in sorted(self.tracker.voters):
            if node != self.id:
                self._send(kind, node, term=term, index=last_index, log_term=last_term, context=ctx)

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MT.PRE_VOTE
        resp = MT.PRE_VOTE_RESP if pre else MT.VOTE_RESP
        granted = may_grant_vote(
            VoteRequest(m.src, m.term, m.log_term, m.index, pre),
            term=self.term,
            voted_for=self.vote,
            leader=self.lead,
            last_term=self.log.last_term(),
            last_index=self.log.last_index(),
        )
        if granted:
            # A granted pre-vote answers with the future term it was asked about.
            self._send(resp, m.src, term=m.term)
            if not pre:
                self.timer.reset()
                self.vote = m.src
        else:
            self._send(resp, m.src, reject=True)

    def _priority_handicap(self) -> int:
        prios = self.config.priorities
        if not prios:
            return 0
        mine = prios.get(self.id, 0)
        return 1 if any(prios.get(v, 0) > mine for v in self.tracker.voters) else 0

    def _maybe_priority_transfer(self) -> None:
        prios = self.config.priorities
        if not prios or self.transfer.active:
            return
        mine = prios.get(self.id, 0)
        last = self.log.last_index()
        best: tuple[int, str] | None = None
        for node in sorted(self.tracker.voters):
            pr = self.tracker.progress.get(node)
            p = prios.get(node, 0)
            if node == self.id or pr is None or p <= mine:
                continue
            if pr.recent_active and pr.match == last and (best is None or p > best[0]):
                best = (p, node)
        if best is not None:
            self.transfer_leadership(best[1])

    # ================================================================== role steps

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MT.PROP:
            if self.lead is not None and self.config.forward_proposals:
                self._send(MT.PROP, self.lead, term=0, entries=m.entries)
        elif t is MT.APP:
            self._set_leader_heard(m.src)
            self._handle_append(m)
        elif t is MT.HEARTBEAT:
            self._set_leader_heard(m.src)
            self._handle_heartbeat(m)
        elif t is MT.SNAP:
            self._set_leader_heard(m.src)
            self._handle_snapshot(m)
        elif t is MT.TIMEOUT_NOW:
            self._hup(transfer=True)
        elif t is MT.READ_INDEX_RESP:
            self._read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        mine = MT.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MT.VOTE_RESP
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            # Someone won this term: follow it.
            self._become_follower(m.term, m.src)
            self._step_follower(m)
        elif t is mine:
            self.votes.record(m.src, not m.reject)
            result = self.votes.result(self.tracker.config)
            if result is VoteResult.WON:
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif result is VoteResult.LOST:
                self._become_follower(self.term, None)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MT.PROP:
            if any(e.kind is not EntryKind.NORMAL for e in m.entries):
                return  # membership changes are proposed on the leader only
            for e in m.entries:
                try:
                    self._propose(Entry(0, 0, e.data))
                except (Unavailable, NotLeader):
                    return  # dropped: the client's retry goes through the session table
            return
        if t is MT.READ_INDEX:
            self._leader_read_index(m.context, m.src)
            return
        pr = self.tracker.progress.get(m.src)
        if pr is None:
            return
        if t is MT.APP_RESP:
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif t is MT.HEARTBEAT_RESP:
            pr.recent_active = True
            self._handle_heartbeat_response(m, pr)
        elif t is MT.SNAP_RESP:
            pr.recent_active = True
            self._handle_snapshot_response(m, pr)

    # ================================================================== follower side

    def _handle_append(self, m: Message) -> None:
        # Every answer echoes the append's stamp: for the leader's lease it is as good
        # as a heartbeat's acknowledgement.
        if m.index < self.log.committed:
            self._send(MT.APP_RESP, m.src, index=self.log.committed, stamp=m.stamp)
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(MT.APP_RESP, m.src, index=last_new, stamp=m.stamp)
            return
        # Fast backtracking: tell the leader the last index whose term is <= the term it
        # probed with; every entry above it cannot match.
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term
        )
        self._send(
            MT.APP_RESP,
            m.src,
            index=m.index,
            reject=True,
            reject_hint=hint_index,
            log_term=hint_term,
            stamp=m.stamp,
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        if m.context == QUIESCE_CONTEXT and m.commit == self.log.last_index() == self.log.committed:
            # The leader went quiet with our log complete: stop the election timer until
            # a message, a request or the failure detector wakes us.
            self.quiesced = True
        self._send(MT.HEARTBEAT_RESP, m.src, context=m.context, stamp=m.stamp)

    def _handle_snapshot(self, m: Message) -> None:
        meta = m.snapshot
        if meta is None:
            return
        if meta.index <= self.log.committed:
            self._snap_recv = None
            self._send(MT.APP_RESP, m.src, index=self.log.committed)
            return
        recv = self._snap_recv
        if recv is None or recv.meta != meta:
            if m.snap_offset != 0:
                self._send(MT.SNAP_RESP, m.src, index=meta.index, snap_offset=0, reject=True)
                return
            recv = self._snap_recv = _SnapshotReceive(meta)
        if m.snap_offset != len(recv.buf):
            self._send(
                MT.SNAP_RESP, m.src, index=meta.index, snap_offset=len(recv.buf), reject=True
            )
            return
        recv.buf += m.snap_data
        if not m.snap_done:
            self._send(MT.SNAP_RESP, m.src, index=meta.index, snap_offset=len(recv.buf))
            return
        self._snap_recv = None
        if self._restore(Snapshot(meta, bytes(recv.buf))):
            self._send(MT.APP_RESP, m.src, index=self.log.last_index())
        else:
            self._send(MT.APP_RESP, m.src, index=self.log.committed)

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.meta
        if meta.index <= self.log.committed:
            return False
        # A snapshot whose membership predates our addition is still accepted: the
        # leader sending it counts us as a member, and the entries after it (which the
        # leader keeps, see compaction_floor) carry the change that added us.
        if self.log.match_term(meta.index, meta.term):
            # We already have this prefix: fast-forward commit instead.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self.tracker.apply_conf(meta.conf_state, self.log.last_index() + 1)
        self._conf_changed = meta.conf_state
        self.timer.set_handicap(self._priority_handicap())
        return True

    # ================================================================== leader side

    def _propose(self, entry: Entry) -> ProposalTicket | None:
        if self.role is Role.LEADER:
            if self.transfer.active:
                raise Unavailable(
                    f"leadership of group {self.group_id} is being transferred to "
                    f"{self.transfer.target}; retry shortly",
                    leader_hint=self.transfer.target,
                )
            if self.id not in self.tracker.progress:
                raise NotLeader(
                    "this leader was removed from the group",
                    leader_hint=None,
                    group_id=self.group_id,
                )
            size = len(entry.data)
            cap = self.config.max_uncommitted_bytes
            if cap and size and self._uncommitted_bytes and self._uncommitted_bytes + size > cap:
                raise Unavailable(
                    f"group {self.group_id} has {self._uncommitted_bytes} uncommitted bytes "
                    f"(max_uncommitted_bytes={cap}); retry once some commit"
                )
            index = self._append([entry])
            return ProposalTicket(index, self.term)
        if (
            self.lead is not None
            and self.config.forward_proposals
            and (entry.kind is EntryKind.NORMAL)
        ):
            self._send(MT.PROP, self.lead, term=0, entries=(entry,))
            return None
        raise NotLeader(leader_hint=self.lead, group_id=self.group_id)

    def _append(self, entries: list[Entry]) -> int:
        li = self.log.last_index()
        ents = [Entry(li + 1 + i, self.term, e.data, e.kind) for i, e in enumerate(entries)]
        self.log.append(ents)
        for e in ents:
            if e.data:
                self._uncommitted.append((e.index, len(e.data)))
                self._uncommitted_bytes += len(e.data)
        me = self.tracker.progress.get(self.id)
        if me is not None:
            me.next = self.log.last_index() + 1
        self._need_bcast = True
        return self.log.last_index()

    def _maybe_commit(self) -> bool:
        if not self.log.maybe_commit(self.tracker.committed(), self.term):
            return False
        q = self._uncommitted
        while q and q[0][0] <= self.log.committed:
            self._uncommitted_bytes -= q.popleft()[1]
        if self.config.commit_broadcast:
            self._need_bcast = True
        if self._pending_reads and self._committed_in_term():
            pending, self._pending_reads = self._pending_reads, []
            for ctx, requester in pending:
                self._leader_read_index(ctx, requester)
        return True

    def _committed_in_term(self) -> bool:
        # By index, not by term(commit) == term: a log may hold entries of our term that
        # predate our leadership (a bootstrap entry at term 1, say).
        return self.role is Role.LEADER and self.log.committed >= self._term_start

    def _bcast_append(self) -> None:
        # With commit_broadcast an empty append carries a new commit index; without it
        # an append is only worth sending if it carries entries (the step path may have
        # sent this cycle's entries already, right after the follower's last response).
        if_empty = self.config.commit_broadcast
        for node in sorted(self.tracker.progress):
            if node != self.id and self._maybe_send_append(node, send_if_empty=if_empty):
                # Pipelining: fill the follower's in-flight window, not just one message.
                pr = self.tracker.progress[node]
                while pr.state is ProgressState.REPLICATE and self._maybe_send_append(
                    node, send_if_empty=False
                ):
                    pass

    def _maybe_send_append(self, to: str, *, send_if_empty: bool = True) -> bool:
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        ents = (
            self.log.entries(pr.next, self.config.max_msg_bytes) if prev_term is not None else None
        )
        if prev_term is None or ents is None:
            return self._maybe_send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._send(
            MT.APP,
            to,
            index=prev,
            log_term=prev_term,
            entries=tuple(ents),
            commit=self.log.committed,
            stamp=self._clock.now() if self._clock is not None else 0.0,
        )
        pr.sent_entries(len(ents), ents[-1].index if ents else prev, sum(len(e.data) for e in ents))
        return True

    def _bcast_heartbeat(self, context: bytes | None = None, *, periodic: bool = False) -> None:
        ctx = context if context is not None else (self.reads.last_context() or b"")
        stamp = self._clock.now() if self._clock is not None else 0.0
        skip_acked = periodic and not ctx and self.config.heartbeat_piggyback
        for node in sorted(self.tracker.progress):
            if node == self.id:
                continue
            pr = self.tracker.progress[node]
            if pr.acked_since_heartbeat:
                pr.acked_since_heartbeat = False
                if skip_acked and pr.state is ProgressState.REPLICATE:
                    continue
            self._send(
                MT.HEARTBEAT,
                node,
                commit=min(pr.match, self.log.committed),
                context=ctx,
                stamp=stamp,
            )

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.stamp:
            # An answer to one of this term's appends (stamped when sent): the follower
            # reset its election timer for it, as for a heartbeat.
            pr.acked_since_heartbeat = True
            if self._clock is not None and not self.transfer.active:
                self.lease.record_ack(m.src, m.stamp)
        if m.reject:
            probe = m.reject_hint
            if m.log_term > 0:
                probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(m.src)
            return
        was_paused = pr.is_paused()
        if (
            pr.state is ProgressState.SNAPSHOT
            and pr.transfer is not None
            and pr.transfer.done_sent
            and m.index < pr.pending_snapshot
        ):
            # The follower took the whole snapshot but did not install it: start over
            # (with whatever snapshot storage holds by then) from its match.
            pr.maybe_update(m.index)
            pr.reset_state(ProgressState.PROBE)
            pr.next = pr.match + 1
            self._maybe_send_append(m.src)
            return
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match + 1 >= self.log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if not self._maybe_commit() and was_paused:
            self._maybe_send_append(m.src)
        while self._maybe_send_append(m.src, send_if_empty=False):
            pass
        if m.src == self.transfer.target and pr.match == self.log.last_index():
            self._send_timeout_now(m.src)

    def _handle_heartbeat_response(self, m: Message, pr: Progress) -> None:
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first()
        if pr.state is ProgressState.SNAPSHOT:
            tr = pr.transfer
            if tr is not None:
                tr.idle_rounds += 1
                if tr.idle_rounds >= 2:
                    # Lost chunks or a lost final answer: resume from what was acked.
                    tr.idle_rounds = 0
                    tr.sent = tr.acked
                    tr.done_sent = False
                    self._send_snapshot_chunks(m.src, pr)
        elif pr.match < self.log.last_index() or pr.state is ProgressState.PROBE:
            self._maybe_send_append(m.src)
        if self._clock is not None and not self.transfer.active:
            self.lease.record_ack(m.src, m.stamp)
        if m.context:
            acks = self.reads.ack(m.src, m.context)
            if (
                acks is not None
                and self.tracker.config.vote_result({v: v in acks for v in self.tracker.voters})
                is VoteResult.WON
            ):
                for req in self.reads.release_through(m.context):
                    self._answer_read(req)

    def _maybe_send_snapshot(self, to: str, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.storage.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty:
            return False
        pr.become_snapshot(snap)
        self._send_snapshot_chunks(to, pr)
        return True

    def _send_snapshot_chunks(self, to: str, pr: Progress) -> None:
        tr = pr.transfer
        if tr is None:
            return
        data = tr.snapshot.data
        chunk = self.config.snapshot_chunk_bytes
        window = chunk * self.config.snapshot_chunks_in_flight
        while not tr.done_sent and tr.sent - tr.acked < window:
            end = min(tr.sent + chunk, len(data))
            done = end >= len(data)
            self._send(
                MT.SNAP,
                to,
                snapshot=tr.snapshot.meta,
                snap_offset=tr.sent,
                snap_data=data[tr.sent : end],
                snap_done=done,
            )
            tr.sent = end
            tr.done_sent = done

    def _handle_snapshot_response(self, m: Message, pr: Progress) -> None:
        tr = pr.transfer
        if pr.state is not ProgressState.SNAPSHOT or tr is None:
            return
        if tr.snapshot.meta.index != m.index:
            return
        tr.idle_rounds = 0
        if m.reject:
            tr.sent = tr.acked = m.snap_offset
            tr.done_sent = False
        else:
            tr.acked = max(tr.acked, m.snap_offset)
        self._send_snapshot_chunks(m.src, pr)

    def _send_timeout_now(self, to: str) -> None:
        self.transfer.timeout_now_sent = True
        self.lease.reset()
        self._send(MT.TIMEOUT_NOW, to)

    # ================================================================== reads

    def _may_use_lease(self) -> bool:
        return (
            self.role is Role.LEADER
            and self._clock is not None
            and self.config.lease_reads
            and not self.transfer.active
            and self._committed_in_term()
        )

    def _lease_valid(self) -> bool:
        if not self._may_use_lease():
            return False
        assert self._clock is not None
        now = self._clock.now()
        return self.lease.valid(self.tracker.config, self.id, now)

    def _leader_read_index(self, context: bytes, requester: str) -> None:
        if self.tracker.voters == {self.id}:
            self._answer_read(ReadRequest(self.log.committed, context, requester))
            return
        if not self._committed_in_term():
            # Our commit index may lag the previous leader's until our no-op commits.
            self._pending_reads.append((context, requester))
            return
        if self.reads.add(self.log.committed, context, requester, self.id):
            self._bcast_heartbeat(context)

    def _answer_read(self, req: ReadRequest) -> None:
        if req.requester == self.id:
            self._read_states.append(ReadState(req.index, req.context))
        else:
            self._send(MT.READ_INDEX_RESP, req.requester, index=req.index, context=req.context)

    # ================================================================== membership

    def _apply_conf_entry(self, e: Entry) -> None:
        try:
            cc = decode_conf_change(e.data)
            new = apply_conf_change(self.tracker.conf, cc)
        except InvalidRequest:
            return  # committed but invalid against the applied config: a no-op everywhere
        self._apply_conf(new)

    def _apply_conf(self, conf: ConfState) -> None:
        self.tracker.apply_conf(conf, self.log.last_index() + 1)
        self._conf_changed = conf
        self.timer.set_handicap(self._priority_handicap())
        if self.role is not Role.LEADER:
            return
        if not self.tracker.is_voter(self.id):
            # Removed (or demoted) once the change is applied: step down (thesis 4.2.2).
            self._become_follower(self.term, None)
            return
        if self.transfer.target is not None and not self.tracker.is_voter(self.transfer.target):
            self.transfer.abort()
        self._maybe_commit()
        self._need_bcast = True

    def _leader_after_apply(self) -> None:
        if self.role is not Role.LEADER or self.pending_conf_index > self.log.applied:
            return
        conf = self.tracker.conf
        if conf.is_joint:
            if conf.auto_leave:
                self._auto_propose(ConfChange(leave_joint=True))
            return
        for node in sorted(conf.auto_promote & conf.learners):
            pr = self.tracker.progress.get(node)
            if (
                pr is not None
                and pr.state is ProgressState.REPLICATE
                and pr.match >= self.log.committed
            ):
                self._auto_propose(ConfChange((ConfChangeOp(ConfChangeType.ADD_VOTER, node),)))
                return

    def _auto_propose(self, cc: ConfChange) -> None:
        try:
            self.propose_conf_change(cc)
        except (Unavailable, NotLeader, InvalidRequest):
            pass  # tried again after the next apply

    # ================================================================== output

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _snapshot_due(self) -> bool:
        n = self.config.snapshot_interval_entries
        return bool(n) and self.log.applied - self._last_snapshot_request >= n

    def _send(self, kind: MessageType, to: str, **fields: object) -> None:
        term = fields.pop("term", self.term)
        m = Message(kind, self.group_id, self.id, to, term, **fields)  # type: ignore[arg-type]
        (self._msgs if kind in _IMMEDIATE else self._msgs_after).append(m)
