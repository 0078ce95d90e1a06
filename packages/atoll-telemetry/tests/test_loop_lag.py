"""EventLoopLagProbe: a stalled event loop shows up in the lag gauge and histogram."""

from __future__ import annotations

import time

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atoll.core import InMemoryMetrics
from atoll.telemetry import EventLoopLagProbe, PrometheusMetrics

pytestmark = pytest.mark.anyio

DEADLINE = 10.0
STALL = 0.3
INTERVAL = 0.02


def exported(metrics: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def stall_the_event_loop(seconds: float) -> None:
    # The fault under test, not a wait: block the loop the way a synchronous fsync or a
    # long GC pause would, so every timer on it fires late.
    time.sleep(seconds)


async def test_a_stall_is_measured_by_the_gauge_and_the_histogram() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    probe = EventLoopLagProbe(metrics, interval=INTERVAL)
    async with anyio.create_task_group() as tg:
        await tg.start(probe.run)
        with anyio.fail_after(DEADLINE):
            while probe.samples < 2:
                await anyio.sleep(INTERVAL)
        # The probe is now asleep with a deadline INTERVAL away; blocking for STALL means
        # it wakes at least STALL - INTERVAL late, whatever the machine's speed.
        stall_the_event_loop(STALL)
        with anyio.fail_after(DEADLINE):
            while probe.max_lag < STALL - INTERVAL:
                await anyio.sleep(INTERVAL)
        # No await between reading the probe and the exposition: they must agree.
        values = exported(metrics)
        assert values[("atoll_process_event_loop_lag_seconds", ())] == probe.last_lag
        tg.cancel_scope.cancel()

    count = values[("atoll_process_event_loop_wakeup_lag_seconds_count", ())]
    within_100ms = values[("atoll_process_event_loop_wakeup_lag_seconds_bucket", (("le", "0.1"),))]
    assert count >= 3
    assert within_100ms <= count - 1, "the stall must land above the 100 ms bucket"
    assert values[("atoll_process_event_loop_wakeup_lag_seconds_sum", ())] >= STALL - INTERVAL


async def test_the_probe_works_with_any_metrics_registry_and_reports_samples() -> None:
    metrics = InMemoryMetrics()
    seen: list[tuple[float, float]] = []
    probe = EventLoopLagProbe(
        metrics, interval=INTERVAL, on_sample=lambda due, ran: seen.append((due, ran))
    )
    async with anyio.create_task_group() as tg:
        await tg.start(probe.run)
        stall_the_event_loop(STALL)
        with anyio.fail_after(DEADLINE):
            while probe.samples < 1:
                await anyio.sleep(INTERVAL)
        assert metrics.value("atoll_process_event_loop_lag_seconds") == probe.last_lag
        assert probe.last_lag >= STALL - INTERVAL
        assert len(seen) == probe.samples
        due, ran = seen[0]
        assert ran - due >= STALL - INTERVAL
        assert max(0.0, seen[-1][1] - seen[-1][0]) == probe.last_lag
        tg.cancel_scope.cancel()


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval must be > 0"):
        EventLoopLagProbe(InMemoryMetrics(), interval=0)


def test_creating_two_probes_on_one_registry_shares_the_metrics() -> None:
    metrics = PrometheusMetrics(process_metrics=False)
    EventLoopLagProbe(metrics)
    EventLoopLagProbe(metrics)
    assert metrics.names() == [
        "atoll_process_event_loop_lag_seconds",
        "atoll_process_event_loop_wakeup_lag_seconds",
    ]
