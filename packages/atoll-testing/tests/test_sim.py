"""The deterministic simulator: ordering, replay from a seed, and each link fault."""

from __future__ import annotations

from typing import Any

from atoll.testing import LinkFaults, Scheduler, SimNetwork


def test_callbacks_run_in_time_then_schedule_order() -> None:
    s = Scheduler(seed=1)
    seen: list[str] = []
    s.call_later(2.0, seen.append, "c")
    s.call_later(1.0, seen.append, "a")
    s.call_later(1.0, seen.append, "b")
    h = s.call_later(1.5, seen.append, "cancelled")
    h.cancel()
    s.run_for(5.0)
    assert seen == ["a", "b", "c"]
    assert s.now() == 5.0


def test_call_every_and_stop() -> None:
    s = Scheduler()
    ticks: list[float] = []
    stop = s.call_every(1.0, lambda: ticks.append(s.now()))
    s.run_for(3.5)
    stop()
    s.run_for(10)
    assert ticks == [1.0, 2.0, 3.0]


def test_run_until_true_stops_at_condition_and_at_deadline() -> None:
    s = Scheduler()
    box = {"n": 0}
    s.call_every(1.0, lambda: box.__setitem__("n", box["n"] + 1))
    assert s.run_until_true(lambda: box["n"] >= 3, timeout=10)
    assert s.now() == 3.0
    assert not s.run_until_true(lambda: box["n"] >= 100, timeout=5)
    assert s.now() == 8.0


def _run(seed: int) -> list[tuple[float, str, int]]:
    s = Scheduler(seed=seed)
    net = SimNetwork(s, LinkFaults(drop=0.2, duplicate=0.2, reorder=0.3))
    got: list[tuple[float, str, int]] = []
    net.register("a", lambda src, m: None)
    net.register("b", lambda src, m: got.append((s.now(), src, m)))
    for i in range(200):
        s.call_at(i * 0.001, net.send, "a", "b", i)
    s.run_for(1.0)
    return got


def test_same_seed_same_history_other_seed_differs() -> None:
    assert _run(7) == _run(7)
    assert _run(7) != _run(8)


def test_faults_drop_duplicate_reorder() -> None:
    got = _run(3)
    msgs = [m for _, _, m in got]
    assert len(set(msgs)) < 200  # some dropped
    assert len(msgs) > len(set(msgs))  # some duplicated
    assert msgs != sorted(msgs)  # some reordered


def test_partition_isolate_heal_and_crash() -> None:
    s = Scheduler()
    net = SimNetwork(s)
    inbox: dict[str, list[Any]] = {"a": [], "b": [], "c": []}
    for name, box in inbox.items():
        net.register(name, lambda src, m, box=box: box.append((src, m)))
    net.partition([["a"], ["b", "c"]])
    net.send("a", "b", 1)
    net.send("b", "c", 2)
    s.run_for(1)
    assert inbox["b"] == [] and inbox["c"] == [("b", 2)]
    net.heal()
    net.send("a", "b", 3)
    s.run_for(1)
    assert inbox["b"] == [("a", 3)]
    net.isolate("c")
    net.send("b", "c", 4)
    net.send("c", "a", 5)
    s.run_for(1)
    assert ("b", 4) not in inbox["c"] and inbox["a"] == []
    net.heal()
    net.unregister("c")  # crash: messages to it vanish
    net.send("a", "c", 6)
    s.run_for(1)
    assert ("a", 6) not in inbox["c"]
    assert net.stats.dropped >= 3


def test_message_in_flight_when_partition_starts_is_lost() -> None:
    s = Scheduler()
    net = SimNetwork(s, LinkFaults(delay=(0.5, 0.5)))
    got: list[Any] = []
    net.register("a", lambda src, m: None)
    net.register("b", lambda src, m: got.append(m))
    net.send("a", "b", "x")
    s.run_for(0.1)
    net.partition([["a"], ["b"]])
    s.run_for(1)
    assert got == []
