"""Leader leases: how long a leader may serve reads without a round of heartbeats.

Owns: remembering, per voter, the send time of the newest heartbeat it acknowledged,
and turning those into a lease expiry under a configurable clock-drift bound.

Why it is sound: with check-quorum on, a follower ignores vote requests for
``election_ticks`` ticks after hearing from its leader (see :func:`ignores_vote_request`),
so no other leader can be elected before a quorum of voters let that time pass. A
heartbeat sent at leader time ``t`` and acknowledged by a quorum therefore guarantees
leadership until ``t + duration`` by the leader's clock, minus ``max_clock_drift`` for
the clocks' disagreement about elapsed time.

Never: reads a clock itself (callers pass monotonic ``now`` values), or grants a lease
on acknowledgements from an earlier term (:meth:`LeaseTracker.reset` on every change).
"""

from __future__ import annotations

import math

from ._quorum import JointConfig

__all__ = ["LeaseTracker"]


class LeaseTracker:
    """Per-voter heartbeat acknowledgement times and the lease they add up to."""

    __slots__ = ("_acks", "_start", "duration", "max_clock_drift")

    def __init__(self, duration: float, max_clock_drift: float) -> None:
        if duration < 0 or max_clock_drift < 0:
            raise ValueError(
                f"lease duration ({duration}) and max clock drift ({max_clock_drift}) must be >= 0"
            )
        self.duration = duration
        self.max_clock_drift = max_clock_drift
        self._acks: dict[str, float] = {}
        self._start: tuple[JointConfig, str, float] | None = None
        """(config, leader, quorum time with the leader counted at +inf), kept until an
        acknowledgement, a reset or another config changes it: a leader checks its lease
        on every read."""

    @property
    def effective_duration(self) -> float:
        """The usable lease length: ``duration - max_clock_drift`` (never negative)."""
        return max(0.0, self.duration - self.max_clock_drift)

    def record_ack(self, voter: str, sent_at: float) -> None:
        """``voter`` acknowledged a heartbeat the leader sent at ``sent_at``."""
        if sent_at > self._acks.get(voter, -math.inf):
            self._acks[voter] = sent_at
            self._start = None

    def expiry(self, config: JointConfig, leader: str, now: float) -> float:
        """When the lease ends, by the leader's clock (``-inf`` without a quorum of acks).

        The leader counts itself as having acknowledged at ``now``.
        """
        if self.effective_duration <= 0:
            return -math.inf
        cached = self._start
        if cached is not None and cached[0] is config and cached[1] == leader:
            start = cached[2]
        else:
            stamps = dict(self._acks)
            stamps[leader] = math.inf
            start = config.quorum_time(stamps)
            self._start = (config, leader, start)
        # Acknowledged send times are never after ``now`` (one monotonic clock), so
        # counting the leader at +inf instead of ``now`` changes the quorum time only
        # where the leader's own stamp alone decides it (no other voter to wait for).
        if start == math.inf:
            start = config.quorum_time({**self._acks, leader: now})
        if start == -math.inf:
            return -math.inf
        return start + self.effective_duration

    def valid(self, config: JointConfig, leader: str, now: float) -> bool:
        """Whether the lease covers ``now``."""
        return now < self.expiry(config, leader, now)

    def reset(self) -> None:
        """Forget every acknowledgement (new term, step-down, transfer started)."""
        self._acks.clear()
        self._start = None
