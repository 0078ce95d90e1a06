"""What a leader knows about each follower's log, and the flow control of sending to it.

Owns: :class:`Inflights` (the window of unacknowledged AppendEntries, bounded in count
and bytes), :class:`Progress` (match/next indexes and the probe -> replicate -> snapshot
state machine of etcd's tracker), and :class:`ProgressTracker` (the membership as quorum
configurations plus one progress per member).
Never: sends messages or reads the log; the node core consults and updates it.
"""

from __future__ import annotations

import collections
import enum

from atoll.election import JointConfig

from ._types import ConfState, Snapshot

__all__ = ["Inflights", "Progress", "ProgressState", "ProgressTracker", "SnapshotTransfer"]


class Inflights:
    """A FIFO of (last index, bytes) of AppendEntries sent but not yet acknowledged."""

    __slots__ = ("_bytes", "_q", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        if max_count < 1:
            raise ValueError(f"max in-flight messages must be >= 1, got {max_count}")
        self.max_count = max_count
        self.max_bytes = max_bytes
        """0 means no byte limit."""
        self._q: collections.deque[tuple[int, int]] = collections.deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._q)

    @property
    def bytes(self) -> int:
        """Payload bytes in flight."""
        return self._bytes

    def full(self) -> bool:
        """Whether no further message may be sent until something is acknowledged."""
        return len(self._q) >= self.max_count or (
            self.max_bytes > 0 and self._bytes >= self.max_bytes
        )

    def add(self, last_index: int, nbytes: int) -> None:
        """Record a message whose last entry is ``last_index``."""
        self._q.append((last_index, nbytes))
        self._bytes += nbytes

    def free_le(self, index: int) -> None:
        """Forget every message whose last entry is ``<= index`` (acknowledged)."""
        q = self._q
        while q and q[0][0] <= index:
            self._bytes -= q.popleft()[1]

    def free_first(self) -> None:
        """Forget the oldest message (a heartbeat response unblocks a full window)."""
        if self._q:
            self._bytes -= self._q.popleft()[1]

    def reset(self) -> None:
        """Forget everything."""
        self._q.clear()
        self._bytes = 0


class ProgressState(enum.Enum):
    """How the leader is currently replicating to one follower."""

    PROBE = "probe"
    """Where the follower's log matches is unknown: one AppendEntries per heartbeat."""
    REPLICATE = "replicate"
    """Matching point known: stream (pipeline) entries within the in-flight window."""
    SNAPSHOT = "snapshot"
    """The follower needs a snapshot; entries wait until it is installed."""


class SnapshotTransfer:
    """One InstallSnapshot in progress. The leader pins the snapshot it started with, so
    a far-behind follower finishes even while newer snapshots are taken.

    A plain class rather than an attrs one (as is :class:`Progress`), so that the module
    compiles with mypyc (see :mod:`atoll.core.native`).
    """

    __slots__ = ("acked", "done_sent", "idle_rounds", "sent", "snapshot")

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.sent = 0
        """Bytes sent so far (the next chunk starts here)."""
        self.acked = 0
        """Bytes the follower confirmed holding."""
        self.done_sent = False
        self.idle_rounds = 0
        """Heartbeat rounds without progress; resending resumes from ``acked``."""

    def __repr__(self) -> str:
        return (
            f"SnapshotTransfer(index={self.snapshot.meta.index}, sent={self.sent}, "
            f"acked={self.acked}, done_sent={self.done_sent}, idle_rounds={self.idle_rounds})"
        )


class Progress:
    """The leader's view of one member's log."""

    __slots__ = (
        "acked_since_heartbeat",
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
        "transfer",
    )

    def __init__(self, *, next: int = 1, inflights: Inflights | None = None) -> None:
        self.match = 0
        self.next = next
        self.state = ProgressState.PROBE
        self.probe_sent = False
        """In PROBE: an AppendEntries is outstanding; wait for its answer or a heartbeat."""
        self.pending_snapshot = 0
        """In SNAPSHOT: the index of the snapshot being sent."""
        self.recent_active = True
        """Heard from within the last election timeout (check-quorum)."""
        self.acked_since_heartbeat = False
        """Acknowledged an append since the last periodic heartbeat (``heartbeat_piggyback``
        then skips the next heartbeat to it)."""
        self.is_learner = False
        self.inflights = inflights if inflights is not None else Inflights(256)
        self.transfer: SnapshotTransfer | None = None

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"probe_sent={self.probe_sent}, recent_active={self.recent_active}, "
            f"is_learner={self.is_learner}, inflight={len(self.inflights)})"
        )

    def reset_state(self, state: ProgressState) -> None:
        """Enter ``state`` with a clean window."""
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.transfer = None
        self.inflights.reset()

    def become_probe(self) -> None:
        """Fall back to probing (a rejection, an unreachable peer, a finished snapshot)."""
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self.reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self.reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        """Start streaming after the match point is known."""
        self.reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot: Snapshot) -> None:
        """Start sending ``snapshot``."""
        self.reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot.meta.index
        self.transfer = SnapshotTransfer(snapshot)

    def maybe_update(self, index: int) -> bool:
        """A success response up to ``index``; True if ``match`` moved forward."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append at ``rejected``; back ``next`` off to
        ``match_hint + 1``. False if the rejection is stale (ignored)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def sent_entries(self, count: int, last_index: int, nbytes: int) -> None:
        """An AppendEntries with ``count`` entries (ending at ``last_index``) was sent."""
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index, nbytes)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        """Whether nothing more may be sent to this member right now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True


class ProgressTracker:
    """The group's membership and the leader's per-member progress."""

    __slots__ = ("conf", "config", "max_inflight", "max_inflight_bytes", "progress")

    def __init__(self, max_inflight: int, max_inflight_bytes: int = 0) -> None:
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.conf = ConfState()
        self.config = JointConfig()
        self.progress: dict[str, Progress] = {}

    def apply_conf(self, conf: ConfState, next_index: int) -> None:
        """Switch to membership ``conf``; new members start probing at ``next_index``."""
        self.conf = conf
        self.config = JointConfig.of(conf.voters, conf.voters_outgoing)
        learners = conf.learners | conf.learners_next
        members = conf.members
        for gone in [p for p in self.progress if p not in members]:
            del self.progress[gone]
        for node in sorted(members):
            pr = self.progress.get(node)
            if pr is None:
                pr = Progress(
                    next=next_index,
                    inflights=Inflights(self.max_inflight, self.max_inflight_bytes),
                )
                self.progress[node] = pr
            pr.is_learner = node in learners and node not in self.config.voters

    @property
    def voters(self) -> frozenset[str]:
        """Every voter (both halves while joint)."""
        return self.config.voters

    def is_voter(self, node: str) -> bool:
        """Whether ``node`` votes."""
        return node in self.config.voters

    def committed(self) -> int:
        """The highest index a quorum of voters has durably matched."""
        return self.config.committed_index({n: p.match for n, p in self.progress.items()})

    def quorum_active(self) -> bool:
        """Check-quorum: whether a quorum heard from us within the last election timeout."""
        return self.config.quorum_active(
            lambda n: (p := self.progress.get(n)) is not None and p.recent_active
        )
