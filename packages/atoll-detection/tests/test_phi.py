"""The phi accrual detector, on its own."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.detection import ArrivalWindow, PhiAccrualDetector


def _feed(d: PhiAccrualDetector, node: str, times: list[float]) -> None:
    for t in times:
        d.heartbeat(node, t)


@pytest.mark.parametrize("dist", ["normal", "exponential"])
def test_phi_rises_with_silence_and_crosses_the_threshold(dist: str) -> None:
    d = PhiAccrualDetector(threshold=8, distribution=dist, min_std=0.1)
    _feed(d, "a", [float(i) for i in range(50)])
    assert d.phi("a", 49.5) < 1
    values = [d.phi("a", 49 + s) for s in (0.5, 1, 2, 4, 8, 16, 32)]
    assert values == sorted(values)
    assert d.is_available("a", 49.5)
    assert not d.is_available("a", 49 + 40)


def test_unknown_endpoint_has_phi_zero() -> None:
    d = PhiAccrualDetector()
    assert d.phi("nobody", 100.0) == 0.0
    assert "nobody" not in d


def test_bootstrap_convicts_a_node_that_only_sent_one_heartbeat() -> None:
    d = PhiAccrualDetector(first_interval=1.0, distribution="exponential")
    d.heartbeat("a", 0.0)
    assert d.is_available("a", 1.0)
    assert not d.is_available("a", 60.0)


def test_irregular_heartbeats_are_judged_more_leniently() -> None:
    rng = random.Random(3)
    steady = PhiAccrualDetector(min_std=0.01, first_interval=None)
    jittery = PhiAccrualDetector(min_std=0.01, first_interval=None)
    t1 = t2 = 0.0
    for _ in range(100):
        t1 += 1.0
        t2 += rng.uniform(0.2, 1.8)
        steady.heartbeat("a", t1)
        jittery.heartbeat("a", t2)
    assert steady.phi("a", t1 + 2.0) > jittery.phi("a", t2 + 2.0)


def test_max_interval_keeps_long_gaps_out_of_the_window() -> None:
    w = ArrivalWindow(10, max_interval=2.0)
    for t in (0.0, 1.0, 2.0, 30.0, 31.0):
        w.arrive(t)
    assert len(w) == 3
    assert w.mean == pytest.approx(1.0)


def test_window_is_bounded_and_running_stats_match() -> None:
    w = ArrivalWindow(5)
    for t in (0.0, 1.0, 3.0, 4.0, 8.0, 9.0, 12.0):
        w.arrive(t)
    assert len(w) == 5
    intervals = [2.0, 1.0, 4.0, 1.0, 3.0]
    assert w.mean == pytest.approx(sum(intervals) / 5)
    mean = sum(intervals) / 5
    assert w.std == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in intervals) / 5))


def test_remove_forgets() -> None:
    d = PhiAccrualDetector()
    d.heartbeat("a", 0.0)
    d.remove("a")
    assert "a" not in d and list(d) == []


@given(
    st.lists(st.floats(0.01, 10.0), min_size=1, max_size=30),
    st.floats(0.0, 1e6),
    st.sampled_from(["normal", "exponential"]),
)
def test_phi_is_finite_non_negative_and_never_raises(
    gaps: list[float], silence: float, dist: str
) -> None:
    d = PhiAccrualDetector(distribution=dist)
    t = 0.0
    for g in gaps:
        t += g
        d.heartbeat("a", t)
    phi = d.phi("a", t + silence)
    assert phi >= 0.0 and not math.isnan(phi)
    if silence < d.min_silence():
        assert phi < d.threshold  # the cheap pre-check callers rely on is sound
