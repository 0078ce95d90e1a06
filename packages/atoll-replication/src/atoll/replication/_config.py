"""The knobs of one Raft group member.

Owns: :class:`RaftConfig`, every knob validated, with why it exists.
Never: does IO. Kept out of ``_ready`` so that module compiles with mypyc (an attrs
field with a factory default does not); ``_ready`` re-exports it.
"""

from __future__ import annotations

import attrs

from atoll.core import ConfigError

__all__ = ["RaftConfig"]


@attrs.frozen(slots=True)
class RaftConfig:
    """Knobs of one Raft group member. Defaults suit a LAN with a 100 ms tick."""

    node_id: str
    group_id: int = 0
    election_ticks: int = 10
    """Base election timeout; each timeout is drawn from [base, 2*base) ticks."""
    heartbeat_ticks: int = 1
    """A leader heartbeats every this many ticks (must be < election_ticks)."""
    pre_vote: bool = True
    """Campaign only after a pre-vote shows a quorum would vote (thesis 9.6): a node
    returning from a partition cannot disrupt a healthy leader by bumping terms."""
    check_quorum: bool = True
    """A leader that has not heard from a quorum for an election timeout steps down, and
    followers ignore vote requests while they hear from a leader (leader stickiness)."""
    max_msg_bytes: int = 1024 * 1024
    """Entry payload bytes per AppendEntries (at least one entry is always sent)."""
    max_inflight_msgs: int = 256
    """Pipelined AppendEntries per follower before waiting for acknowledgements."""
    max_inflight_bytes: int = 0
    """Payload bytes in flight per follower before waiting (0 = no byte limit)."""
    max_uncommitted_bytes: int = 0
    """Proposals are refused while this many payload bytes are uncommitted (0 = no cap)."""
    max_apply_bytes: int = 64 * 1024 * 1024
    """Committed entry bytes handed out per Ready."""
    applied: int = 0
    """The index the state machine had applied when the node started."""
    tick_seconds: float = 0.1
    """Nominal tick interval; only leader leases convert ticks to seconds."""
    max_clock_drift: float = 0.05
    """Seconds by which two nodes' clocks may disagree over an election timeout; leases
    are shortened by this much."""
    lease_reads: bool = True
    """Allow ``read_index(..., lease=True)`` to answer from the leader lease."""
    snapshot_chunk_bytes: int = 1024 * 1024
    """Bytes of snapshot per InstallSnapshot message."""
    snapshot_chunks_in_flight: int = 4
    """Snapshot chunks sent ahead of the follower's acknowledgement."""
    snapshot_interval_entries: int = 0
    """Ask the shell for a snapshot every this many applied entries (0 = never)."""
    forward_proposals: bool = True
    """A follower forwards ``propose`` to its leader instead of raising NotLeader."""
    commit_broadcast: bool = True
    """When only the commit index advanced, send each follower an empty append so it
    applies at once (etcd-io/raft's behaviour). False leaves it to the next append or
    heartbeat (at most ``heartbeat_ticks`` later), and a broadcast sends appends only to
    followers that have entries to receive: far fewer messages for a lightly batched
    group under load, at the cost of followers applying a little later. Only the
    followers' view of the commit index is affected, never what commits or when the
    leader answers."""
    heartbeat_piggyback: bool = False
    """Skip a periodic heartbeat to a follower that acknowledged an append since the
    previous one: appends carry the leader's clock stamp and their responses echo it, so
    they renew the lease and prove the follower alive just as a heartbeat would, and the
    append already reset its election timer. A heartbeat carrying a read-index context
    is never skipped. False (etcd-io/raft's behaviour) heartbeats every follower every
    ``heartbeat_ticks``; True saves most heartbeats of a busy group, at the cost of an
    idle group's followers learning the last commit index one heartbeat later."""
    priorities: dict[str, int] = attrs.field(factory=dict)
    """Election priority per node (default 0). Lower-priority nodes wait longer to
    campaign, and a leader hands leadership to a caught-up higher-priority voter."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad knob."""
        if not self.node_id:
            raise ConfigError("raft node_id must be a non-empty string")
        if self.election_ticks < 2:
            raise ConfigError(f"raft election_ticks={self.election_ticks}: must be >= 2")
        if not 1 <= self.heartbeat_ticks < self.election_ticks:
            raise ConfigError(
                f"raft heartbeat_ticks={self.heartbeat_ticks}: must be in "
                f"[1, election_ticks={self.election_ticks})"
            )
        for name in (
            "max_msg_bytes",
            "max_inflight_msgs",
            "max_apply_bytes",
            "snapshot_chunk_bytes",
            "snapshot_chunks_in_flight",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"raft {name}={getattr(self, name)}: must be >= 1")
        for name in (
            "max_inflight_bytes",
            "max_uncommitted_bytes",
            "applied",
            "snapshot_interval_entries",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"raft {name}={getattr(self, name)}: must be >= 0")
        if self.tick_seconds <= 0 or self.max_clock_drift < 0:
            raise ConfigError(
                f"raft tick_seconds={self.tick_seconds} must be > 0 and "
                f"max_clock_drift={self.max_clock_drift} >= 0"
            )
        if self.lease_reads and not self.check_quorum:
            raise ConfigError("raft lease_reads=true needs check_quorum=true (leases rely on it)")

    @property
    def lease_duration(self) -> float:
        """Seconds a quorum acknowledgement keeps the leader's lease, before drift.

        A follower ignores votes for ``election_ticks`` ticks after a heartbeat; with
        discrete ticks that is at least ``election_ticks - 1`` tick intervals.
        """
        return (self.election_ticks - 1) * self.tick_seconds
