"""Membership configuration and its timing profiles.

Owns: :class:`MembershipConfig` — dissemination, anti-entropy, join/leave and size
limits — with the detector's :class:`atoll.detection.DetectionConfig` inside it, and the
``lan()`` / ``local()`` profiles (hashicorp/memberlist's ``DefaultLANConfig`` and
``DefaultLocalConfig``), every multiplier commented.
Never: holds state or does IO.
"""

from __future__ import annotations

from typing import Any

import attrs

from atoll.detection import DetectionConfig

__all__ = ["MembershipConfig"]


def _positive(inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"membership.{attr.name} = {value!r} must be greater than zero")


def _non_negative(inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"membership.{attr.name} = {value!r} must not be negative")


@attrs.frozen(kw_only=True)
class MembershipConfig:
    """Every knob of SWIM membership. Use :meth:`lan` or :meth:`local` as a base."""

    cluster: str = "atoll"
    """Cluster name carried in every message; gossip for another cluster is dropped."""
    detection: DetectionConfig = attrs.field(factory=DetectionConfig.lan)

    # --- dissemination
    gossip_interval: float = attrs.field(default=0.2, validator=_positive)
    """Seconds between gossip rounds that push queued updates (besides piggybacking)."""
    gossip_nodes: int = attrs.field(default=3, validator=_non_negative)
    """Random members each gossip round goes to (0: piggyback on probes only)."""
    retransmit_mult: int = attrs.field(default=4, validator=_positive)
    """An update is sent ``retransmit_mult * ceil(log10(n + 1))`` times: with 4, 8 times
    in a 10..99-node cluster, 12 in 100..999 — enough to reach everyone w.h.p."""
    gossip_to_dead: float = attrs.field(default=30.0, validator=_non_negative)
    """Keep gossiping to a dead member this long, so a falsely-declared one can refute."""

    # --- anti-entropy
    push_pull_interval: float = attrs.field(default=30.0, validator=_non_negative)
    """Seconds between full-state syncs with one random member (0 disables); scaled up
    by ``log2(n / 32)`` above 32 members so cluster-wide sync traffic stays bounded."""

    reconnect_interval: float = attrs.field(default=15.0, validator=_non_negative)
    """Seconds between push-pull attempts with one random *failed* member (0 disables):
    how two sides of a healed partition find each other again (Serf's reconnect)."""
    reconnect_timeout: float = attrs.field(default=3600.0, validator=_non_negative)
    """Failed (not left) members are retried this long after they were declared dead."""

    # --- lifecycle
    dead_reclaim: float = attrs.field(default=30.0, validator=_positive)
    """A dead or left member is removed from the table this long after it was declared."""
    join_timeout: float = attrs.field(default=2.0, validator=_positive)
    """Wait this long for any seed's sync reply before retrying."""
    join_backoff_max: float = attrs.field(default=30.0, validator=_positive)
    """Retries double their delay up to this cap (with jitter)."""
    join_max_attempts: int = attrs.field(default=0, validator=_non_negative)
    """Give up after this many attempts (0: keep trying)."""
    leave_fanout: int = attrs.field(default=6, validator=_non_negative)
    """A leaving node sends its leave directly to this many members, besides gossip."""

    # --- size limits
    max_gossip_bytes: int = attrs.field(default=1400, validator=_positive)
    """Largest ping/ack/gossip message (a UDP-sized datagram, as in memberlist)."""
    max_sync_bytes: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)
    """Largest push-pull or heartbeat-digest message."""
    max_queue_depth: int = attrs.field(default=4096, validator=_positive)
    """Most updates waiting for dissemination; anti-entropy covers what is dropped."""

    @classmethod
    def lan(cls, **overrides: Any) -> MembershipConfig:
        """memberlist's LAN defaults (1 s probes, 200 ms gossip to 3 nodes, 30 s push-pull)."""
        return cls(**overrides)

    @classmethod
    def local(cls, **overrides: Any) -> MembershipConfig:
        """Loopback / single-host profile: faster gossip, fewer retransmits, 15 s push-pull."""
        base: dict[str, Any] = {
            "detection": DetectionConfig.local(),
            "gossip_interval": 0.1,  # loopback is cheap; halve dissemination latency
            "retransmit_mult": 2,  # almost no loss on loopback
            "push_pull_interval": 15.0,
            "gossip_to_dead": 15.0,
            "dead_reclaim": 15.0,
        }
        base.update(overrides)
        return cls(**base)
