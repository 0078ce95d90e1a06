"""The event-loop lag probe: how late the node's event loop runs a timer.

Owns: :class:`EventLoopLagProbe`, a background task that sleeps for a fixed interval and
records how much later than asked it woke up, as ``atoll_process_event_loop_lag_seconds``
(the last measurement) and ``atoll_process_event_loop_wakeup_lag_seconds`` (every
measurement, as a histogram).
Never: blocks, or waits for any condition: its sleep *is* the instrument.

Why it matters here: heartbeats, SWIM probes and election timers all run on this loop.
A loop stalled by a blocking call or a long GC pause answers probes late, and peers
suspect a healthy node; this gauge is the first thing to read when that happens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import anyio
import anyio.abc

from atoll.core import MetricsRegistry

__all__ = ["DEFAULT_LAG_INTERVAL", "EventLoopLagProbe"]

DEFAULT_LAG_INTERVAL: Final = 0.1
"""Seconds between two lag measurements."""


class EventLoopLagProbe:
    """Measures event-loop lag into ``metrics`` while :meth:`run` runs.

    :param metrics: where the gauge and histogram are created (any
        :class:`atoll.core.MetricsRegistry`; creation is idempotent on
        :class:`atoll.telemetry.PrometheusMetrics`).
    :param interval: seconds between measurements; a lag shorter than the loop's timer
        resolution reads as 0.
    :param on_sample: called after each measurement with ``(due, ran)``: when the
        wake-up was due and when it ran, in ``anyio.current_time()`` seconds (which is
        ``time.monotonic()``, i.e. :class:`atoll.core.SystemClock`, on asyncio's loop;
        the same clock in whole milliseconds, read once per iteration, on uvloop). The
        failure detector's ``LoopLagMonitor.observe`` has this shape. It runs on the
        event loop and must not block; an exception from it propagates out of
        :meth:`run`.
    """

    def __init__(
        self,
        metrics: MetricsRegistry,
        *,
        interval: float = DEFAULT_LAG_INTERVAL,
        on_sample: Callable[[float, float], object] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"lag probe interval must be > 0 seconds, got {interval!r}")
        self._interval = interval
        self._on_sample = on_sample
        self._gauge = metrics.gauge(
            "atoll_process_event_loop_lag_seconds",
            "How late the event loop woke the last lag probe, in seconds.",
        )
        self._histogram = metrics.histogram(
            "atoll_process_event_loop_wakeup_lag_seconds",
            "How late the event loop woke each lag probe, in seconds.",
        )
        self._last = 0.0
        self._max = 0.0
        self._samples = 0

    @property
    def last_lag(self) -> float:
        """The most recent measurement, in seconds (0 before the first)."""
        return self._last

    @property
    def max_lag(self) -> float:
        """The largest measurement since this probe was created, in seconds."""
        return self._max

    @property
    def samples(self) -> int:
        """How many measurements have been taken."""
        return self._samples

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Measure until cancelled. Use with ``TaskGroup.start`` or ``start_soon``."""
        task_status.started()
        while True:
            due = anyio.current_time() + self._interval
            # The measurement itself: a timer of known length; whatever it overshoots
            # by is time the loop spent unable to run ready callbacks.
            await anyio.sleep(self._interval)
            ran = anyio.current_time()
            self._record(max(0.0, ran - due))
            if self._on_sample is not None:
                self._on_sample(due, ran)

    def _record(self, lag: float) -> None:
        self._last = lag
        self._max = max(self._max, lag)
        self._samples += 1
        self._gauge.set(lag)
        self._histogram.observe(lag)
