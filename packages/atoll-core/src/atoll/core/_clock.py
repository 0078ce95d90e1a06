"""Injected time and randomness, so protocol cores never read the wall clock or global random.

Owns: the :class:`Clock` protocol, the real clock, an offset clock (for skew tests), and
the seeded RNG factory.
Never: is used from a pure core other than through these objects.
"""

from __future__ import annotations

import random
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "OffsetClock", "Rng", "SystemClock", "make_rng"]

Rng = random.Random
"""The RNG type cores accept: a seeded :class:`random.Random` instance, never the module."""


@runtime_checkable
class Clock(Protocol):
    """A monotonic time source in seconds. Virtual in simulation, real in a node."""

    def now(self) -> float:
        """Seconds since an arbitrary, fixed origin; never goes backwards."""
        ...


class SystemClock:
    """The real monotonic clock (``time.monotonic``)."""

    def now(self) -> float:
        """Current monotonic time in seconds."""
        return time.monotonic()


class OffsetClock:
    """Another clock shifted by an adjustable offset: how chaos tests skew one node."""

    def __init__(self, base: Clock, offset: float = 0.0, rate: float = 1.0) -> None:
        self._base = base
        self._origin = base.now()
        self.offset = offset
        self.rate = rate

    def now(self) -> float:
        """Base time, scaled by ``rate`` around the creation instant, plus ``offset``."""
        t = self._base.now()
        return self._origin + (t - self._origin) * self.rate + self.offset


def make_rng(seed: int | None = None) -> Rng:
    """Return a private RNG; pass a seed to make a run replayable."""
    return random.Random(seed)
