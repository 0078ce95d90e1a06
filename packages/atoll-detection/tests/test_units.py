"""Unit tests of the pure detection pieces: awareness, loop lag, suspicion, probe ring."""

from __future__ import annotations

import math
import random

import pytest

from atoll.detection import (
    Awareness,
    DetectionConfig,
    DetectorMode,
    LoopLagMonitor,
    ProbeRing,
    ProbeVerdict,
    Suspicion,
    SwimDetector,
    suspicion_timeout,
)


def test_awareness_clamps_and_scales() -> None:
    a = Awareness(max_multiplier=4)
    assert a.scale(0.5) == 0.5
    assert a.apply_delta(10) == 3
    assert a.score == 3
    assert a.scale(0.5) == 2.0
    assert a.apply_delta(-1) == -1
    a.apply_delta(-10)
    assert a.score == 0
    with pytest.raises(ValueError, match="max_multiplier"):
        Awareness(0)


def test_loop_lag_counts_stalls_by_length() -> None:
    lag = LoopLagMonitor(threshold=0.1, unit=0.5)
    assert lag.observe(1.0, 1.01) == 0
    assert not lag.stalled_since(0.0)
    assert lag.observe(2.0, 3.0) == 3  # 1 s stall = 1 + floor(1.0 / 0.5)
    assert lag.stalled_since(2.5)
    assert not lag.stalled_since(3.0)
    assert lag.stall_count == 1
    assert lag.max_lag == pytest.approx(1.0)


def test_suspicion_timeout_scales_with_log_cluster_size() -> None:
    assert suspicion_timeout(4, 1, 1.0) == 4.0
    assert suspicion_timeout(4, 10, 1.0) == pytest.approx(4.0)
    assert suspicion_timeout(4, 100, 1.0) == pytest.approx(8.0)
    assert suspicion_timeout(5, 1000, 0.5) == pytest.approx(7.5)


def test_suspicion_shrinks_with_independent_confirmations() -> None:
    s = Suspicion(start=10.0, min_timeout=4.0, max_timeout=24.0, k=3, suspector="a")
    assert s.deadline == 34.0
    assert not s.confirm("a")  # the original suspector is not a confirmation
    assert s.confirm("b")
    one = s.timeout()
    assert 4.0 < one < 24.0
    assert not s.confirm("b")  # duplicates do not count
    assert s.confirm("c")
    assert s.confirm("d")
    assert s.timeout() == 4.0
    assert not s.confirm("e")  # k reached
    assert s.confirmations == 3
    expected = 24.0 - (20.0 * math.log(2) / math.log(4))
    assert one == pytest.approx(expected)


def test_plain_swim_suspicion_is_fixed() -> None:
    s = Suspicion(0.0, 5.0, 5.0, 0, "a")
    assert not s.confirm("b")
    assert s.deadline == 5.0
    with pytest.raises(ValueError, match="min_timeout"):
        Suspicion(0.0, 5.0, 4.0, 1, "a")


def test_probe_ring_visits_everyone_once_per_pass() -> None:
    ring = ProbeRing(random.Random(1))
    for i in range(10):
        ring.add(f"n{i}")
    first = [ring.next() for _ in range(10)]
    second = [ring.next() for _ in range(10)]
    assert sorted(first) == sorted(second) == [f"n{i}" for i in range(10)]
    ring.remove("n3")
    third = [ring.next() for _ in range(9)]
    assert "n3" not in third and len(set(third)) == 9
    assert ring.next({"n0": False, **{f"n{i}": False for i in range(1, 10)}}) is None


def test_probe_ring_is_deterministic_per_seed() -> None:
    def order(seed: int) -> list[str | None]:
        ring = ProbeRing(random.Random(seed))
        for i in range(20):
            ring.add(f"n{i}")
        return [ring.next() for _ in range(40)]

    assert order(5) == order(5)
    assert order(5) != order(6)


def _detector(mode: str) -> SwimDetector:
    return SwimDetector(DetectionConfig.lan(mode=mode), random.Random(0))


def test_lifeguard_missing_nacks_raise_local_health() -> None:
    d = _detector("swim+lifeguard")
    p = d.begin("x", 1, 0.0)
    d.go_indirect(p, 3)
    d.on_nack(p)
    assert d.conclude(p) is ProbeVerdict.FAILED
    assert d.awareness.score == 2  # two of three helpers stayed silent
    assert d.probe_timeout() == pytest.approx(3 * 0.5)
    q = d.begin("y", 2, 5.0)
    d.on_ack(q)
    assert d.conclude(q) is ProbeVerdict.ACKED
    assert d.awareness.score == 1


def test_all_nacks_mean_the_target_is_at_fault() -> None:
    d = _detector("swim+lifeguard")
    p = d.begin("x", 1, 0.0)
    d.go_indirect(p, 3)
    for _ in range(3):
        d.on_nack(p)
    assert d.conclude(p) is ProbeVerdict.FAILED
    assert d.awareness.score == 0


def test_plain_swim_ignores_local_health() -> None:
    d = _detector("swim")
    p = d.begin("x", 1, 0.0)
    d.go_indirect(p, 3)
    d.observe_lag(0.1, 2.0)
    assert d.conclude(p) is ProbeVerdict.FAILED
    assert d.awareness.score == 0
    assert d.probe_timeout() == 0.5


def test_a_stall_during_the_probe_makes_it_inconclusive() -> None:
    d = _detector("swim+lifeguard")
    p = d.begin("x", 1, 10.0)
    d.observe_lag(10.2, 11.2)  # this node did not run from 10.2 to 11.2
    assert d.awareness.score == 3
    assert d.stalled_during(p)
    assert d.conclude(p) is ProbeVerdict.INCONCLUSIVE
    d.restart(p, 11.2)
    assert not d.stalled_during(p)
    assert p.timeout_at == pytest.approx(11.2 + 4 * 0.5)


def test_lifeguard_suspicion_bounds() -> None:
    lg = _detector("swim+lifeguard").new_suspicion(0.0, 100, "a")
    assert (lg.min_timeout, lg.max_timeout, lg.k) == (8.0, 48.0, 2)
    small = _detector("swim+lifeguard").new_suspicion(0.0, 3, "a")
    assert small.k == 0  # too few members to ever confirm
    plain = _detector("swim").new_suspicion(0.0, 100, "a")
    assert plain.min_timeout == plain.max_timeout == 8.0


def test_config_validation_names_the_key() -> None:
    with pytest.raises(ValueError, match="probe_timeout"):
        DetectionConfig(probe_timeout=2.0, probe_interval=1.0)
    with pytest.raises(ValueError, match=r"detection\.probe_interval"):
        DetectionConfig(probe_interval=0)
    with pytest.raises(ValueError, match="phi_distribution"):
        DetectionConfig(phi_distribution="weibull")
    with pytest.raises(ValueError, match="'bogus' is not a valid DetectorMode"):
        DetectionConfig(mode="bogus")
    assert DetectionConfig().mode is DetectorMode.LIFEGUARD
    assert DetectionConfig.local().probe_timeout < DetectionConfig.lan().probe_timeout


def test_suspicion_defer_moves_the_deadline_and_counts() -> None:
    s = Suspicion(10.0, 4.0, 24.0, 2, "a")
    assert s.deadline == 34.0
    s.defer(40.0)
    assert s.deadline == 40.0 and s.deferrals == 1
    s.defer(35.0)  # never earlier
    assert s.deadline == 40.0 and s.deferrals == 2


@pytest.mark.parametrize("mode", ["swim", "swim+lifeguard"])
def test_a_verdict_is_deferred_only_by_lifeguard_and_only_after_a_self_stall(mode: str) -> None:
    cfg = DetectionConfig.lan(mode=mode, max_verdict_deferrals=2)
    d = SwimDetector(cfg, random.Random(1))
    s = d.new_suspicion(0.0, 10, "b")
    late = s.deadline + 1.0
    assert not d.defer_verdict(s, late)  # on time: no stall seen, judge now
    d.observe_lag(s.deadline - 0.5, late)  # this node was frozen across the deadline
    if mode == "swim":
        assert not d.defer_verdict(s, late)
        return
    assert d.defer_verdict(s, late)
    assert s.deadline == late + d.probe_timeout()
    d.observe_lag(s.deadline - 0.5, s.deadline + 2.0)  # frozen again
    assert d.defer_verdict(s, s.deadline + 2.0)
    d.observe_lag(s.deadline - 0.5, s.deadline + 2.0)
    assert not d.defer_verdict(s, s.deadline + 2.0)  # bounded: a verdict comes eventually
