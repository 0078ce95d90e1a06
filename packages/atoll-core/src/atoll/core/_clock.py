"""Injected time and randomness, so protocol cores never read the wall clock or global random.

Owns: the :class:`Clock` protocol, the real clock, an offset clock (for skew tests), and
the seeded RNG factory.
Never: is used from a pure core other than through these objects.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "TEST_CLOCK_ENV",
    "Clock",
    "FileClock",
    "OffsetClock",
    "Rng",
    "SystemClock",
    "clock_from_env",
    "make_rng",
]

TEST_CLOCK_ENV = "ATOLL_TEST_CLOCK_FILE"
"""Fault injection only: a node started with this variable naming a JSON file takes its
Raft lease clock from :class:`FileClock` on that file, so a chaos test can skew it."""

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


class FileClock:
    """``time.monotonic`` scaled by ``rate`` and shifted by ``offset``, both from a file."""

    def __init__(self, path: Path, *, poll: float = 0.02) -> None:
        self.path = path
        self.poll = poll
        self.rate = 1.0
        self.offset = 0.0
        self._base_anchor = time.monotonic()
        self._value_anchor = self._base_anchor
        self._next_poll = 0.0
        self._mtime = -1.0
        self._last = -float("inf")

    def _reload(self, t: float) -> None:
        self._next_poll = t + self.poll
        try:
            st = os.stat(self.path)
        except OSError:
            return
        if st.st_mtime == self._mtime:
            return
        self._mtime = st.st_mtime
        try:
            doc = json.loads(self.path.read_text())
            rate = float(doc.get("rate", 1.0))
            offset = float(doc.get("offset_ms", 0.0)) / 1000.0
        except (OSError, ValueError, TypeError, AttributeError):
            return
        if rate <= 0:
            return
        # re-anchor: the clock keeps its current value, then runs at the new rate
        self._value_anchor = self._value(t)
        self._base_anchor = t
        self.rate = rate
        if offset > self.offset:
            self._value_anchor += offset - self.offset
        self.offset = offset

    def _value(self, t: float) -> float:
        return self._value_anchor + (t - self._base_anchor) * self.rate

    def now(self) -> float:
        """Skewed monotonic seconds; never less than a value returned before."""
        t = time.monotonic()
        if t >= self._next_poll:
            self._reload(t)
        v = max(self._value(t), self._last)
        self._last = v
        return v


def clock_from_env(environ: dict[str, str] | None = None) -> Clock:
    """The node's clock: :class:`SystemClock`, or a :class:`FileClock` when the fault
    injection variable ``ATOLL_TEST_CLOCK_FILE`` names a file (chaos tests only)."""
    env = os.environ if environ is None else environ
    path = env.get(TEST_CLOCK_ENV)
    return FileClock(Path(path)) if path else SystemClock()
