"""SWIM probe scheduling and the Lifeguard decisions taken around each probe.

Owns: :class:`ProbeRing` (round-robin over a shuffled member list, new members inserted
at random places, as in SWIM section 4.3 and memberlist), :class:`ProbeRound` (one
probe's deadlines, acks and nacks), and :class:`SwimDetector`, the small interface the
membership core drives: whom to probe, how long to wait, whether a silent target failed,
how long a suspicion lasts.
Never: sends messages, reads the clock or owns member state; it is told what happened.
"""

from __future__ import annotations

import enum

import attrs

from atoll.core import Rng

from ._awareness import Awareness
from ._config import DetectionConfig
from ._looplag import LoopLagMonitor
from ._suspicion import Suspicion, suspicion_timeout

__all__ = ["ProbeRing", "ProbeRound", "ProbeVerdict", "SwimDetector"]


class ProbeRing:
    """Round-robin probe order over a shuffled list, reshuffled after each full pass.

    Every member is probed once per pass, so a failed member is found within
    ``n`` probe periods in the worst case (SWIM's time-bounded completeness).
    """

    __slots__ = ("_i", "_members", "_order", "_rng")

    def __init__(self, rng: Rng) -> None:
        self._rng = rng
        self._members: dict[str, None] = {}
        self._order: list[str] = []
        self._i = 0

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._members

    def add(self, node_id: str) -> None:
        """Add a member at a random position of the remaining pass."""
        if node_id in self._members:
            return
        self._members[node_id] = None
        pos = self._rng.randint(self._i, len(self._order))
        self._order.insert(pos, node_id)

    def remove(self, node_id: str) -> None:
        """Stop probing ``node_id`` (removed lazily from the order)."""
        self._members.pop(node_id, None)

    def next(self, eligible: dict[str, bool] | None = None) -> str | None:
        """The next member to probe, skipping those with ``eligible[id] is False``."""
        if not self._members:
            return None
        for _ in range(2):
            while self._i < len(self._order):
                nid = self._order[self._i]
                self._i += 1
                if nid in self._members and (eligible is None or eligible.get(nid, True)):
                    return nid
            # End of a pass: reshuffle (sorted first so the order depends only on the RNG).
            self._order = sorted(self._members)
            self._rng.shuffle(self._order)
            self._i = 0
        return None


class ProbeVerdict(enum.Enum):
    """How a probe ended."""

    ACKED = "acked"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    """This node itself stalled during the probe; it cannot blame the target."""


@attrs.define(slots=True)
class ProbeRound:
    """One probe of one target: deadlines, and what came back."""

    target: str
    seq: int
    sent_at: float
    timeout_at: float
    """When to give up on the direct ack and ask helpers."""
    end_at: float
    """When to conclude the probe if no ack came at all."""
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    acked: bool = False
    restarts: int = 0


class SwimDetector:
    """SWIM probing policy, with the Lifeguard extensions when ``config.lifeguard``."""

    def __init__(self, config: DetectionConfig, rng: Rng) -> None:
        self.config = config
        self.lifeguard = config.lifeguard
        self.awareness = Awareness(config.awareness_max)
        self.loop_lag = LoopLagMonitor(config.loop_lag_threshold, config.probe_timeout)
        self.ring = ProbeRing(rng)

    # ------------------------------------------------------------------ timing
    def _scale(self, t: float) -> float:
        return self.awareness.scale(t) if self.lifeguard else t

    def probe_interval(self) -> float:
        """The protocol period, stretched by the local health multiplier under Lifeguard."""
        return self._scale(self.config.probe_interval)

    def probe_timeout(self) -> float:
        """The direct-ack timeout, stretched by the local health multiplier under Lifeguard."""
        return self._scale(self.config.probe_timeout)

    def nack_timeout(self) -> float:
        """How long a helper waits for the target before it nacks the requester."""
        return self.config.nack_fraction * self.probe_timeout()

    # ------------------------------------------------------------------ probes
    def begin(self, target: str, seq: int, now: float) -> ProbeRound:
        """Start probing ``target`` with sequence number ``seq``."""
        return ProbeRound(target, seq, now, now + self.probe_timeout(), now + self.probe_interval())

    def go_indirect(self, probe: ProbeRound, helpers: int) -> None:
        """The direct ack did not come; ``helpers`` nodes were asked to probe instead."""
        probe.indirect_sent = True
        probe.expected_nacks = helpers if self.lifeguard else 0

    def on_ack(self, probe: ProbeRound) -> None:
        """An ack (direct or relayed) for ``probe`` arrived: the target is alive."""
        if not probe.acked:
            probe.acked = True
            if self.lifeguard:
                self.awareness.apply_delta(-1)

    def on_nack(self, probe: ProbeRound) -> None:
        """A helper reports it could not reach the target either (Lifeguard)."""
        probe.nacks += 1

    def stalled_during(self, probe: ProbeRound) -> bool:
        """Lifeguard: whether this node itself stalled since ``probe`` was sent."""
        return self.lifeguard and self.loop_lag.stalled_since(probe.sent_at)

    def restart(self, probe: ProbeRound, now: float) -> None:
        """Give a probe that this node's own stall spoiled a fresh set of deadlines."""
        probe.restarts += 1
        probe.sent_at = now
        probe.timeout_at = now + self.probe_timeout()
        probe.end_at = now + self.probe_interval()
        probe.indirect_sent = False
        probe.expected_nacks = 0
        probe.nacks = 0

    def conclude(self, probe: ProbeRound) -> ProbeVerdict:
        """Judge a probe at its end deadline and update local health accordingly.

        Lifeguard: helpers that did not even nack suggest *we* are the problem, so each
        missing nack raises awareness; with no helpers at all, any failure raises it.
        """
        if probe.acked:
            return ProbeVerdict.ACKED
        if self.lifeguard:
            if self.loop_lag.stalled_since(probe.sent_at):
                return ProbeVerdict.INCONCLUSIVE
            if probe.expected_nacks > 0:
                missing = probe.expected_nacks - probe.nacks
                if missing > 0:
                    self.awareness.apply_delta(missing)
            else:
                self.awareness.apply_delta(1)
        return ProbeVerdict.FAILED

    # ------------------------------------------------------------------ suspicion
    def new_suspicion(self, now: float, cluster_size: int, suspector: str) -> Suspicion:
        """A suspicion of a member, started now, reported first by ``suspector``.

        SWIM: a fixed ``suspicion_mult * log10(n) * interval``. Lifeguard: starts at
        ``suspicion_max_mult`` times that and shrinks to it as ``suspicion_mult - 2``
        independent confirmations arrive (fewer when the cluster is too small).
        """
        cfg = self.config
        low = suspicion_timeout(cfg.suspicion_mult, cluster_size, cfg.probe_interval)
        if not self.lifeguard:
            return Suspicion(now, low, low, 0, suspector)
        k = int(cfg.suspicion_mult) - 2
        if cluster_size - 2 < k:
            k = 0
        return Suspicion(now, low, cfg.suspicion_max_mult * low, k, suspector)

    def defer_verdict(self, suspicion: Suspicion, now: float) -> bool:
        """Lifeguard: whether to postpone declaring a suspect dead at ``now``.

        Yes when this node itself was stalled after the suspicion's deadline: the timer
        fired late, and messages that queued during the stall (the refutation among
        them) have not been read yet. The verdict moves one (health-scaled) probe
        timeout later, at most ``max_verdict_deferrals`` times per suspicion, so a node
        that keeps stalling still reaches a verdict.
        """
        if not self.lifeguard or suspicion.deferrals >= self.config.max_verdict_deferrals:
            return False
        if not self.loop_lag.stalled_since(suspicion.deadline):
            return False
        suspicion.defer(now + self.probe_timeout())
        return True

    # ------------------------------------------------------------------ local health
    def observe_lag(self, due: float, ran: float) -> None:
        """A callback due at ``due`` ran at ``ran``; a stall raises awareness (Lifeguard)."""
        delta = self.loop_lag.observe(due, ran)
        if delta and self.lifeguard:
            self.awareness.apply_delta(delta)

    def on_refute(self) -> None:
        """We had to refute a suspicion of ourselves: likely we are slow (Lifeguard)."""
        if self.lifeguard:
            self.awareness.apply_delta(1)
