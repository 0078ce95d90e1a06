"""Membership and detection metrics, exported through an ``atoll.core.MetricsRegistry``.

Owns: the metric names (``atoll_membership_*``, ``atoll_detection_*``) and turning the
core's plain counters into registry counters by delta, so the pure core never touches a
metrics library.
Never: computes protocol state; it only reads :class:`MembershipStats` and friends.
"""

from __future__ import annotations

import attrs

from atoll.core import MetricsRegistry

from ._core import MembershipCore, MembershipStats

__all__ = ["MembershipMetrics"]

_COUNTERS: dict[str, tuple[str, str]] = {
    "probes_sent": ("atoll_membership_probes_sent_total", "SWIM probes this node started."),
    "probes_failed": (
        "atoll_membership_probes_failed_total",
        "Probes that got no ack, direct or indirect.",
    ),
    "probes_inconclusive": (
        "atoll_detection_probes_inconclusive_total",
        "Probes not judged because this node itself stalled (Lifeguard).",
    ),
    "suspicions_raised": (
        "atoll_membership_suspicions_raised_total",
        "Times this node moved a member to suspect.",
    ),
    "suspicions_refuted": (
        "atoll_membership_suspicions_refuted_total",
        "Suspected members that proved alive with a higher incarnation.",
    ),
    "dead_declared": ("atoll_membership_dead_declared_total", "Members this node marked dead."),
    "false_dead_detected": (
        "atoll_membership_false_dead_detected_total",
        "Members marked dead that later proved alive (false positives found afterwards).",
    ),
    "refutations": (
        "atoll_membership_refutations_total",
        "Suspicions or death notices about this node that it refuted.",
    ),
    "nacks_sent": ("atoll_detection_nacks_sent_total", "Lifeguard nacks sent as a probe helper."),
    "verdicts_deferred": (
        "atoll_detection_verdicts_deferred_total",
        "Suspicion deadlines not judged yet because this node itself had stalled (Lifeguard).",
    ),
}


class MembershipMetrics:
    """Registers the membership metrics once and updates them from a core's state."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._counters = {
            field: registry.counter(name, doc) for field, (name, doc) in _COUNTERS.items()
        }
        self._last = MembershipStats()
        self.members = registry.gauge(
            "atoll_membership_members", "Members in this node's table, by state.", ["state"]
        )
        self.health = registry.gauge(
            "atoll_detection_local_health_score",
            "Lifeguard local health score (0 healthy; timeouts scale by score + 1).",
        )
        self.queue = registry.gauge(
            "atoll_membership_broadcast_queue_depth", "Updates waiting to be gossiped."
        )
        self.loop_lag = registry.gauge(
            "atoll_detection_loop_lag_seconds", "Event-loop lag at the last sample."
        )
        self.gossip_bytes = registry.counter(
            "atoll_membership_gossip_sent_bytes_total", "Bytes of gossip frames sent."
        )
        self.gossip_messages = registry.counter(
            "atoll_membership_gossip_sent_messages_total", "Gossip frames sent."
        )
        self.dropped = registry.counter(
            "atoll_membership_messages_dropped_total",
            "Inbound gossip dropped (malformed, foreign) or outbound dropped (queue full).",
            ["reason"],
        )

    def update(self, core: MembershipCore) -> None:
        """Bring every metric up to date with ``core``."""
        stats = core.stats
        for field, counter in self._counters.items():
            delta = getattr(stats, field) - getattr(self._last, field)
            if delta > 0:
                counter.inc(delta)
        self._last = attrs.evolve(stats)
        for state, n in core.counts().items():
            self.members.labels(state=state.value).set(n)
        self.health.set(core.detector.awareness.score)
        self.queue.set(core.queue_depth)
        self.loop_lag.set(core.detector.loop_lag.last_lag)
