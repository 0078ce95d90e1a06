"""The phi accrual failure detector (Hayashibara et al.; Cassandra, Akka).

Owns: per-endpoint sliding windows of heartbeat inter-arrival times and the suspicion
level phi computed from them. Usable on its own: feed :meth:`PhiAccrualDetector.heartbeat`
with arrival times, ask :meth:`PhiAccrualDetector.phi` or
:meth:`PhiAccrualDetector.is_available`.
Never: reads the clock, does IO, or decides what to *do* about a high phi.

phi = -log10(P(a heartbeat arrives later than now)), so phi 8 means the detector would
be wrong about one time in 10^8 if arrivals followed the modelled distribution.
Two models: "normal" (Akka: mean and standard deviation of the window, plus an
acceptable pause) and "exponential" (Cassandra: ``phi = t / (mean * ln 10)``).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator

__all__ = ["ArrivalWindow", "PhiAccrualDetector"]


class ArrivalWindow:
    """The last ``size`` inter-arrival intervals of one endpoint, with running sums."""

    __slots__ = ("_intervals", "_sum", "_sumsq", "last_arrival", "max_interval")

    def __init__(
        self, size: int, first_interval: float | None = None, max_interval: float | None = None
    ) -> None:
        if size < 2:
            raise ValueError(f"window size {size} must be at least 2")
        self.max_interval = max_interval
        self._intervals: collections.deque[float] = collections.deque(maxlen=size)
        self._sum = 0.0
        self._sumsq = 0.0
        self.last_arrival: float | None = None
        if first_interval is not None and first_interval > 0:
            # Akka's bootstrap: two synthetic samples around the expected interval, so a
            # node that dies right after its first heartbeat is still convicted.
            std = first_interval / 4
            self._add(first_interval - std)
            self._add(first_interval + std)

    def __len__(self) -> int:
        return len(self._intervals)

    def _add(self, interval: float) -> None:
        if len(self._intervals) == self._intervals.maxlen:
            old = self._intervals[0]
            self._sum -= old
            self._sumsq -= old * old
        self._intervals.append(interval)
        self._sum += interval
        self._sumsq += interval * interval

    def arrive(self, t: float) -> None:
        """Record a heartbeat arrival at time ``t`` (arrivals that go back in time are ignored).

        Intervals above ``max_interval`` are not sampled (Cassandra's rule): a long gap is
        what the detector judges, it must not also teach it that long gaps are normal.
        """
        last = self.last_arrival
        if last is not None:
            if t < last:
                return
            gap = t - last
            if self.max_interval is None or gap <= self.max_interval:
                self._add(gap)
        self.last_arrival = t

    @property
    def mean(self) -> float:
        """Mean interval (0 with no samples)."""
        n = len(self._intervals)
        return self._sum / n if n else 0.0

    @property
    def std(self) -> float:
        """Population standard deviation of the intervals."""
        n = len(self._intervals)
        if n < 2:
            return 0.0
        m = self._sum / n
        return math.sqrt(max(0.0, self._sumsq / n - m * m))


class PhiAccrualDetector:
    """Phi accrual over many endpoints.

    :param threshold: phi at or above which an endpoint is considered unavailable
        (Cassandra's ``phi_convict_threshold`` defaults to 8).
    :param window_size: intervals kept per endpoint.
    :param min_std: floor on the standard deviation, so a perfectly regular sender is
        not convicted by the first slightly late heartbeat.
    :param acceptable_pause: extra time added to the mean before phi rises (GC pauses,
        network hiccups one is willing to ignore).
    :param first_interval: expected interval used to bootstrap a new endpoint's window.
    :param distribution: "normal" (Akka) or "exponential" (Cassandra).
    :param max_interval: intervals longer than this are not sampled (Cassandra: 2 s).
    """

    def __init__(
        self,
        *,
        threshold: float = 8.0,
        window_size: int = 100,
        min_std: float = 0.1,
        acceptable_pause: float = 0.0,
        first_interval: float | None = 1.0,
        distribution: str = "normal",
        max_interval: float | None = None,
    ) -> None:
        if threshold <= 0:
            raise ValueError(f"threshold = {threshold} must be positive")
        if distribution not in ("normal", "exponential"):
            raise ValueError(f"distribution = {distribution!r}: accepted 'normal', 'exponential'")
        self.threshold = threshold
        self.window_size = window_size
        self.min_std = min_std
        self.acceptable_pause = acceptable_pause
        self.first_interval = first_interval
        self.distribution = distribution
        self.max_interval = max_interval
        self._windows: dict[str, ArrivalWindow] = {}

    def __contains__(self, endpoint: object) -> bool:
        return endpoint in self._windows

    def __iter__(self) -> Iterator[str]:
        return iter(self._windows)

    def heartbeat(self, endpoint: str, now: float) -> None:
        """A heartbeat from ``endpoint`` arrived (or was learned about) at ``now``."""
        w = self._windows.get(endpoint)
        if w is None:
            w = self._windows[endpoint] = ArrivalWindow(
                self.window_size, self.first_interval, self.max_interval
            )
        w.arrive(now)

    def remove(self, endpoint: str) -> None:
        """Forget ``endpoint`` (it left or was removed)."""
        self._windows.pop(endpoint, None)

    def window(self, endpoint: str) -> ArrivalWindow | None:
        """The arrival window of ``endpoint``, if it has sent anything."""
        return self._windows.get(endpoint)

    def phi(self, endpoint: str, now: float) -> float:
        """Current suspicion level of ``endpoint`` (0 if it never sent a heartbeat)."""
        w = self._windows.get(endpoint)
        if w is None or w.last_arrival is None or len(w) == 0:
            return 0.0
        elapsed = max(0.0, now - w.last_arrival)
        mean = w.mean + self.acceptable_pause
        if self.distribution == "exponential":
            return elapsed / (mean * math.log(10)) if mean > 0 else 0.0
        std = max(w.std, self.min_std)
        y = (elapsed - mean) / std
        # Logistic approximation of the normal CDF (Akka's PhiAccrualFailureDetector).
        exponent = -y * (1.5976 + 0.070566 * y * y)
        if elapsed > mean:
            # P(later) = e / (1 + e); phi = -log10 of it, computed without overflow.
            if exponent < -700:
                return -exponent / math.log(10)
            e = math.exp(exponent)
            return -math.log10(e / (1.0 + e))
        if exponent > 700:
            return 0.0
        e = math.exp(exponent)
        return -math.log10(1.0 - 1.0 / (1.0 + e))

    def is_available(self, endpoint: str, now: float) -> bool:
        """Whether phi is below the threshold."""
        return self.phi(endpoint, now) < self.threshold

    def min_silence(self) -> float:
        """A lower bound on the silence any endpoint needs before phi reaches the threshold.

        Lets a caller that checks many endpoints skip the recently heard ones cheaply.
        Normal model: phi >= 8 needs ``y >= 5``; exponential: ``t >= threshold * ln 10 * mean``
        and the bootstrap keeps every mean well above a tenth of ``first_interval``.
        """
        if self.distribution == "normal":
            return self.acceptable_pause + 4 * self.min_std * min(1.0, self.threshold / 8)
        return 0.0
