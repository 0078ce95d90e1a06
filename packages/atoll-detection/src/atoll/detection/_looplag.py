"""Event-loop lag as a Lifeguard input: a stalled Python loop must not accuse its peers.

Owns: turning "this callback ran later than it was due" samples into a health delta and
a short record of recent stalls, so a probe that timed out *while this node was not
running* is judged inconclusive rather than a failure of the probed node.
Never: measures anything itself (the shell or the core's own timer lateness feeds it),
reads the clock, or sleeps.
"""

from __future__ import annotations

import collections
import math

__all__ = ["LoopLagMonitor"]


class LoopLagMonitor:
    """Collects lag samples; remembers stalls longer than ``threshold`` seconds.

    :param threshold: lag (seconds) at which a sample counts as a stall. Ordinary
        scheduling jitter and short GC pauses stay below it.
    :param unit: the stall length that is worth one extra point of awareness
        (normally the probe timeout: a stall as long as a probe timeout could have
        turned one healthy probe into a failure).
    :param history: how many recent stalls to remember.
    """

    __slots__ = ("_stalls", "last_lag", "max_lag", "samples", "stall_count", "threshold", "unit")

    def __init__(self, threshold: float, unit: float, history: int = 16) -> None:
        if threshold <= 0 or unit <= 0:
            raise ValueError(f"threshold={threshold} and unit={unit} must be positive")
        self.threshold = threshold
        self.unit = unit
        self._stalls: collections.deque[tuple[float, float]] = collections.deque(maxlen=history)
        self.last_lag = 0.0
        self.max_lag = 0.0
        self.samples = 0
        self.stall_count = 0

    def observe(self, due: float, ran: float) -> int:
        """Record that a callback due at ``due`` ran at ``ran``; return the awareness delta.

        The delta is 0 for an on-time callback, and ``1 + floor(lag / unit)`` for a stall,
        so a stall of twice the probe timeout costs three points at once.
        """
        lag = max(0.0, ran - due)
        self.samples += 1
        self.last_lag = lag
        self.max_lag = max(self.max_lag, lag)
        if lag < self.threshold:
            return 0
        self.stall_count += 1
        self._stalls.append((due, ran))
        return 1 + math.floor(lag / self.unit)

    def stalled_since(self, t: float) -> bool:
        """Whether this node was stalled at any moment after ``t``."""
        return any(end > t for _, end in self._stalls)
