"""Detector selection and timing profiles.

Owns: :class:`DetectionConfig` (which detector, and every timing knob it uses) and the
named profiles ``lan()`` and ``local()`` modelled on hashicorp/memberlist's
``DefaultLANConfig`` / ``DefaultLocalConfig``.
Never: holds state or does IO.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

__all__ = ["DetectionConfig", "DetectorMode"]


class DetectorMode(enum.StrEnum):
    """Which failure detector membership runs."""

    SWIM = "swim"
    """Direct probe + k indirect probes, fixed suspicion timeout (SWIM, Das et al. 2002)."""
    LIFEGUARD = "swim+lifeguard"
    """SWIM plus local health, nacks, dynamic suspicion and the buddy system (default)."""
    PHI = "phi"
    """Gossiped heartbeats judged by a phi accrual detector (Cassandra's approach)."""


def _positive(inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"detection.{attr.name} = {value!r} must be greater than zero")


def _non_negative(inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"detection.{attr.name} = {value!r} must not be negative")


@attrs.frozen(kw_only=True)
class DetectionConfig:
    """Every knob of the failure detectors. Use :meth:`lan` or :meth:`local` as a base."""

    mode: DetectorMode = attrs.field(default=DetectorMode.LIFEGUARD, converter=DetectorMode)
    """"swim", "swim+lifeguard" (default) or "phi"."""

    # --- SWIM probing
    probe_interval: float = attrs.field(default=1.0, validator=_positive)
    """Seconds between probes of (round-robin) members; the SWIM protocol period."""
    probe_timeout: float = attrs.field(default=0.5, validator=_positive)
    """Seconds to wait for a direct ack before asking helpers; about the 99th percentile
    round trip of the network, never more than ``probe_interval``."""
    indirect_checks: int = attrs.field(default=3, validator=_non_negative)
    """k: helpers asked to probe on our behalf when the direct probe times out."""
    suspicion_mult: float = attrs.field(default=4.0, validator=_positive)
    """Suspicion lasts ``suspicion_mult * max(1, log10(n)) * probe_interval`` (Lifeguard:
    that is the *minimum*); also ``k = suspicion_mult - 2`` confirmations shrink it."""
    suspicion_max_mult: float = attrs.field(default=6.0, validator=_positive)
    """Lifeguard: a fresh, unconfirmed suspicion lasts this many times the minimum."""

    # --- Lifeguard
    awareness_max: int = attrs.field(default=8, validator=_positive)
    """Largest local health multiplier: a sick node waits at most 8x longer."""
    nack_fraction: float = attrs.field(default=0.8, validator=_positive)
    """A helper that gets no ack within ``nack_fraction * probe_timeout`` sends a nack."""
    loop_lag_threshold: float = attrs.field(default=0.1, validator=_positive)
    """Event-loop lag (seconds) that counts as a stall of this node."""
    max_verdict_deferrals: int = attrs.field(default=3, validator=_non_negative)
    """Lifeguard: how many times a suspicion deadline that passed while this node was
    stalled is postponed (one probe timeout each) so the backlog is read first."""

    # --- phi accrual
    heartbeat_interval: float = attrs.field(default=1.0, validator=_positive)
    """Phi mode: seconds between a node's own heartbeat increments and digest pushes."""
    heartbeat_fanout: int = attrs.field(default=1, validator=_positive)
    """Phi mode: random peers that receive the heartbeat digest each interval (Cassandra: 1)."""
    phi_threshold: float = attrs.field(default=8.0, validator=_positive)
    """Phi at which a member is convicted (Cassandra's ``phi_convict_threshold``)."""
    phi_window: int = attrs.field(default=100, validator=_positive)
    """Inter-arrival samples kept per member."""
    phi_min_std: float = attrs.field(default=0.5, validator=_positive)
    """Normal model: floor of the interval standard deviation (gossip arrives irregularly)."""
    phi_acceptable_pause: float = attrs.field(default=0.0, validator=_non_negative)
    """Seconds added to the mean interval before phi starts to rise."""
    phi_distribution: str = attrs.field(default="exponential")
    """"exponential" (Cassandra, the default) or "normal" (Akka)."""
    phi_max_interval: float = attrs.field(default=2.0, validator=_positive)
    """Heartbeat gaps longer than this are not sampled into the window (Cassandra: 2 s)."""
    phi_check_interval: float = attrs.field(default=0.5, validator=_positive)
    """How often phi is evaluated for every member."""

    def __attrs_post_init__(self) -> None:
        if self.probe_timeout > self.probe_interval:
            raise ValueError(
                f"detection.probe_timeout = {self.probe_timeout} must not exceed "
                f"probe_interval = {self.probe_interval}"
            )
        if self.phi_distribution not in ("exponential", "normal"):
            raise ValueError(
                f"detection.phi_distribution = {self.phi_distribution!r}: "
                "accepted 'exponential', 'normal'"
            )
        if self.suspicion_max_mult < 1:
            raise ValueError(
                f"detection.suspicion_max_mult = {self.suspicion_max_mult} must be at least 1"
            )

    @property
    def lifeguard(self) -> bool:
        """Whether the Lifeguard extensions are on."""
        return self.mode is DetectorMode.LIFEGUARD

    @classmethod
    def lan(cls, **overrides: Any) -> DetectionConfig:
        """memberlist's LAN profile: 1 s probes, 500 ms timeout, 3 helpers, mult 4 / max 6."""
        return cls(**overrides)

    @classmethod
    def local(cls, **overrides: Any) -> DetectionConfig:
        """memberlist's loopback profile: 200 ms probe timeout, suspicion mult 3."""
        base: dict[str, Any] = {
            "probe_interval": 1.0,
            "probe_timeout": 0.2,  # loopback round trips are well under a millisecond
            "suspicion_mult": 3.0,  # small clusters, fast links: refutations arrive fast
            "loop_lag_threshold": 0.05,
            "heartbeat_interval": 1.0,
        }
        base.update(overrides)
        return cls(**base)
