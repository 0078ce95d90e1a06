"""The linearizability checker judges known histories correctly.

Known-good and known-bad histories by hand (stale read, lost write, cas anomalies,
unknown outcomes), agreement with a brute-force checker on many small random histories,
shrinking that keeps a proof, and speed on a few thousand ops.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from pathlib import Path
from typing import Any

import pytest
from atoll_chaos.checker import check, check_key, shrink, step
from atoll_chaos.history import HistoryRecorder, Op, load_events, pair_events
from atoll_chaos.visualize import FaultWindow, render_html

INF = math.inf


class H:
    """A tiny history builder: ``h.put(p, "a", 0, 1)`` etc."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def _add(self, p: int, f: Any, arg: Any, out: Any, call: float, ret: float, st: Any) -> Op:
        op = Op(len(self.ops), p, "k", f, arg, out, st, call, ret if st == "ok" else INF)
        if st == "fail":
            op = Op(op.id, p, "k", f, arg, out, st, call, ret)
        self.ops.append(op)
        return op

    def get(self, p: int, v: str | None, call: float, ret: float, st: str = "ok") -> Op:
        return self._add(p, "get", None, v, call, ret, st)

    def put(self, p: int, v: str, call: float, ret: float, st: str = "ok") -> Op:
        return self._add(p, "put", v, None, call, ret, st)

    def delete(self, p: int, existed: bool, call: float, ret: float, st: str = "ok") -> Op:
        return self._add(p, "delete", None, existed, call, ret, st)

    def cas(
        self,
        p: int,
        exp: str | None,
        new: str | None,
        ok: bool,
        call: float,
        ret: float,
        st: str = "ok",
        prev: str | None = None,
    ) -> Op:
        return self._add(p, "cas", (exp, new), (ok, prev), call, ret, st)

    def verdict(self) -> str:
        return check(self.ops).verdict


# ---------------------------------------------------------------- hand-made histories


def test_empty_and_sequential_histories_are_linearizable() -> None:
    assert H().verdict() == "ok"
    h = H()
    h.get(0, None, 0, 1)
    h.put(0, "a", 2, 3)
    h.get(1, "a", 4, 5)
    h.cas(1, "a", "b", True, 6, 7)
    h.cas(0, "a", "c", False, 8, 9)
    h.get(0, "b", 10, 11)
    h.delete(1, True, 12, 13)
    h.delete(1, False, 14, 15)
    h.get(0, None, 16, 17)
    assert h.verdict() == "ok"


def test_concurrent_write_may_be_seen_or_not() -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.put(1, "b", 2, 10)  # overlaps both reads
    h.get(2, "b", 3, 4)
    h.get(3, "b", 5, 6)
    assert h.verdict() == "ok"


def test_stale_read_is_caught() -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.put(0, "b", 2, 3)
    h.get(1, "a", 4, 5)  # b was acknowledged before this read began
    assert h.verdict() == "fail"


def test_reads_going_back_in_time_are_caught() -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.put(1, "b", 2, 20)  # concurrent with both reads
    h.get(2, "b", 3, 4)
    h.get(3, "a", 5, 6)  # after someone saw b, a cannot come back
    assert h.verdict() == "fail"


def test_lost_write_is_caught() -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.get(1, None, 2, 3)  # the acknowledged write vanished
    assert h.verdict() == "fail"


def test_lost_write_after_overwrite() -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.put(1, "b", 2, 3)
    h.get(2, "b", 4, 5)
    h.get(2, "a", 6, 7)
    assert h.verdict() == "fail"


def test_cas_anomalies_are_caught() -> None:
    # two cas from the same expected value cannot both succeed
    h = H()
    h.put(0, "a", 0, 1)
    h.cas(1, "a", "b", True, 2, 5)
    h.cas(2, "a", "c", True, 3, 6)
    assert h.verdict() == "fail"
    # a cas that fails although the value matched (nothing concurrent)
    h = H()
    h.put(0, "a", 0, 1)
    h.cas(1, "a", "b", False, 2, 3)
    assert h.verdict() == "fail"
    # a cas that succeeds against a value that was never there
    h = H()
    h.put(0, "a", 0, 1)
    h.cas(1, "z", "b", True, 2, 3)
    assert h.verdict() == "fail"
    # a successful cas whose new value is not visible afterwards
    h = H()
    h.cas(0, None, "a", True, 0, 1)
    h.get(1, None, 2, 3)
    assert h.verdict() == "fail"
    # a cas that reports the wrong previous value
    h = H()
    h.put(0, "a", 0, 1)
    h.cas(1, "a", "b", True, 2, 3, prev="q")
    assert h.verdict() == "fail"


def test_concurrent_cas_chain_is_fine() -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.cas(1, "a", "b", True, 2, 6)
    h.cas(2, "b", "c", True, 3, 7)  # can go after the first: overlaps it
    h.cas(3, "a", "x", False, 4, 8)
    h.get(0, "c", 9, 10)
    assert h.verdict() == "ok"


def test_delete_reports_must_match_state() -> None:
    h = H()
    h.delete(0, True, 0, 1)  # nothing was ever written
    assert h.verdict() == "fail"
    h = H()
    h.put(0, "a", 0, 1)
    h.delete(0, True, 2, 3)
    h.get(1, None, 4, 5)
    assert h.verdict() == "ok"


def test_unknown_write_may_apply_late_or_never() -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.put(1, "b", 2, 3, st="info")  # timed out
    h.get(2, "a", 10, 11)  # not applied (yet)
    h.get(2, "b", 12, 13)  # applied later
    assert h.verdict() == "ok"
    h = H()
    h.put(0, "a", 0, 1)
    h.put(1, "b", 2, 3, st="info")
    h.get(2, "a", 10, 11)
    assert h.verdict() == "ok"  # never applied


def test_unknown_write_cannot_apply_twice() -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.put(1, "b", 2, 3, st="info")
    h.get(2, "b", 4, 5)
    h.put(0, "c", 6, 7)
    h.get(2, "b", 8, 9)  # b already took effect once; it cannot come back after c
    assert h.verdict() == "fail"


def test_unknown_cannot_take_effect_before_its_call() -> None:
    h = H()
    h.get(0, "b", 0, 1)
    h.put(1, "b", 2, 3, st="info")
    assert h.verdict() == "fail"


def test_failed_ops_are_dropped() -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.put(1, "b", 2, 3, st="fail")  # certainly never happened
    h.get(2, "a", 4, 5)
    res = check(h.ops)
    assert res.verdict == "ok"
    assert res.dropped_fail == 1
    h.get(2, "b", 6, 7)
    assert h.verdict() == "fail"


def test_unknown_cas_is_either_applied_or_not() -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.cas(1, "a", "b", True, 2, 3, st="info")
    h.get(2, "b", 4, 5)
    h.get(2, "b", 6, 7)
    assert h.verdict() == "ok"
    h.get(2, "a", 8, 9)
    assert h.verdict() == "fail"


def test_history_partitions_by_key() -> None:
    ops = [
        Op(0, 0, "x", "put", "1", None, "ok", 0, 1),
        Op(1, 1, "y", "put", "2", None, "ok", 0, 1),
        Op(2, 2, "x", "get", None, "1", "ok", 2, 3),
        Op(3, 2, "y", "get", None, "1", "ok", 4, 5),  # y never held 1
    ]
    res = check(ops)
    assert res.keys["x"].verdict == "ok"
    assert res.keys["y"].verdict == "fail"
    assert res.verdict == "fail"


# ---------------------------------------------------------------- vs. brute force


def brute_force(ops: list[Op]) -> bool:
    """Try every order of every subset of unknown ops: the definition, slowly."""
    ops = [o for o in ops if o.status != "fail" and not (o.status == "info" and o.f == "get")]
    known = [o for o in ops if o.status == "ok"]
    unknown = [o for o in ops if o.status == "info"]
    for r in range(len(unknown) + 1):
        for subset in itertools.combinations(unknown, r):
            chosen = known + list(subset)
            for perm in itertools.permutations(chosen):
                if _legal(perm):
                    return True
    return False


def _legal(perm: tuple[Op, ...]) -> bool:
    state: str | None = None
    for i, op in enumerate(perm):
        # real-time: nothing later in the order may have returned before op was called
        if any(later.ret < op.call for later in perm[i + 1 :]):
            return False
        ok, state = step(state, op)
        if not ok:
            return False
    return True


def random_history(rng: random.Random, n: int) -> list[Op]:
    """Random ops with random overlapping times and random (often wrong) outputs."""
    vals: list[Any] = ["a", "b", "c", None]
    ops: list[Op] = []
    arg: Any
    out: Any
    st: Any
    f: Any
    for i in range(n):
        call = rng.uniform(0, 10)
        ret = call + rng.uniform(0.1, 4)
        st = rng.choices(["ok", "info", "fail"], [8, 2, 1])[0]
        f = rng.choice(["get", "put", "cas", "delete"])
        if f == "get":
            arg, out = None, rng.choice(vals)
        elif f == "put":
            arg, out = rng.choice(vals[:3]), None
        elif f == "delete":
            arg, out = None, rng.random() < 0.5
        else:
            arg, out = (rng.choice(vals), rng.choice(vals)), (rng.random() < 0.5, None)
        ops.append(Op(i, i, "k", f, arg, out, st, call, ret if st != "info" else INF))
    return ops


def sequential_history(rng: random.Random, n: int) -> list[Op]:
    """A linearizable history by construction: apply ops at random points of their spans."""
    spans = []
    for _ in range(n):
        call = rng.uniform(0, 10)
        spans.append((call, call + rng.uniform(0.1, 3)))
    points = sorted((rng.uniform(c, r), c, r) for c, r in spans)
    state: str | None = None
    ops: list[Op] = []
    f: Any
    st: Any
    for i, (_, call, ret) in enumerate(points):
        f = rng.choice(["get", "put", "cas", "delete"])
        st = "info" if rng.random() < 0.1 and f != "get" else "ok"
        if f == "get":
            op = Op(i, i, "k", f, None, state, "ok", call, ret)
        elif f == "put":
            v = rng.choice("abc")
            op = Op(i, i, "k", f, v, None, st, call, ret)
            state = v
        elif f == "delete":
            op = Op(i, i, "k", f, None, state is not None, st, call, ret)
            state = None
        else:
            exp, new = rng.choice(["a", "b", None]), rng.choice(["a", "b", "c"])
            swapped = state == exp
            op = Op(i, i, "k", f, (exp, new), (swapped, None), st, call, ret)
            if swapped:
                state = new
        if st == "info":
            op = Op(op.id, op.process, op.key, op.f, op.arg, None, "info", call, INF)
        ops.append(op)
    return ops


@pytest.mark.parametrize("seed", range(300))
def test_agrees_with_brute_force_on_small_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    ops = random_history(rng, rng.randint(1, 6))
    expected = brute_force(ops)
    got = check(ops).verdict
    assert got == ("ok" if expected else "fail"), ops


@pytest.mark.parametrize("seed", range(50))
def test_histories_linearizable_by_construction_pass(seed: int) -> None:
    rng = random.Random(1000 + seed)
    ops = sequential_history(rng, 40)
    assert check(ops).verdict == "ok"


# ---------------------------------------------------------------- shrinking, artifacts


def _brute_fails(ops: list[Op]) -> bool:
    return not brute_force(ops)


@pytest.mark.parametrize("seed", range(40))
def test_shrunk_history_still_fails_and_is_smaller(seed: int) -> None:
    rng = random.Random(5000 + seed)
    ops = sequential_history(rng, 30)
    # corrupt one read or cas result so the history is (usually) not linearizable
    idx = [i for i, o in enumerate(ops) if o.f == "get" and o.status == "ok"]
    if not idx:
        return
    i = rng.choice(idx)
    o = ops[i]
    ops[i] = Op(o.id, o.process, o.key, o.f, o.arg, "zz", o.status, o.call, o.ret)
    res = check_key("k", ops)
    assert res.verdict == "fail"
    assert res.shrunk is not None
    assert len(res.shrunk) <= len(ops)
    assert check(res.shrunk).verdict == "fail"
    if len(res.shrunk) <= 7:
        assert _brute_fails(res.shrunk)


def test_shrinks_a_stale_read_to_its_core() -> None:
    h = H()
    for i in range(20):
        h.put(0, f"v{i}", 10 * i, 10 * i + 1)
        h.get(1, f"v{i}", 10 * i + 2, 10 * i + 3)
    h.get(1, "v3", 500, 501)  # stale: v19 was written long before
    for i in range(5):
        h.get(2, "v19", 600 + i, 600.5 + i)
    small = shrink(h.ops)
    assert check(small).verdict == "fail"
    assert len(small) <= 3, [o.describe() for o in small]


def test_history_round_trips_through_the_recorder(tmp_path: Path) -> None:
    rec = HistoryRecorder(tmp_path / "h.jsonl")
    c = rec.invoke(0, "put", "k", "a")
    rec.complete(c, "ok")
    c = rec.invoke(1, "cas", "k", ["a", "b"])
    rec.complete(c, "ok", [True, "a"])
    c = rec.invoke(0, "get", "k", None)
    rec.complete(c, "ok", "b")
    c = rec.invoke(1, "put", "k", "c")
    rec.complete(c, "info", error="Timeout")
    rec.invoke(2, "delete", "k", None)  # never completed: unknown
    rec.close()
    ops = pair_events(load_events(tmp_path / "h.jsonl"))
    assert [o.status for o in ops] == ["ok", "ok", "ok", "info", "info"]
    assert ops[1].out == (True, "a")
    assert ops[3].ret == INF
    assert check(ops).verdict == "ok"


def test_failure_visualization_is_written(tmp_path: Path) -> None:
    h = H()
    h.put(0, "a", 0, 1)
    h.put(0, "b", 2, 3)
    h.get(1, "a", 4, 5)
    res = check_key("k", h.ops)
    assert res.shrunk is not None
    out = render_html(
        tmp_path / "x.html",
        title="t",
        sections=[("k", res.shrunk, res.best_order, set(res.stuck))],
        faults=[FaultWindow("kill n1", 1.5, 2.5)],
    )
    text = out.read_text()
    assert "<svg" in text and "get=a" in text and "kill n1" in text
    assert res.stuck  # the stale read is the op that cannot be placed


# ---------------------------------------------------------------- speed


def test_thousands_of_concurrent_ops_check_quickly() -> None:
    rng = random.Random(7)
    ops: list[Op] = []
    state: str | None = None
    t = 0.0
    procs = 8
    st: Any
    # 8 clients, overlapping ops, ~3000 ops on one key, a few unknown outcomes
    for i in range(3000):
        t += rng.uniform(0.0005, 0.002)
        call = t - rng.uniform(0, 0.004)
        ret = t + rng.uniform(0, 0.004)
        p = i % procs
        r = rng.random()
        if r < 0.4:
            ops.append(Op(i, p, "k", "get", None, state, "ok", call, ret))
        elif r < 0.7:
            state = f"v{i}"
            st = "info" if rng.random() < 0.01 else "ok"
            ops.append(Op(i, p, "k", "put", state, None, st, call, ret if st == "ok" else INF))
        else:
            exp = state if rng.random() < 0.5 else "nope"
            sw = exp == state
            new = f"c{i}"
            ops.append(Op(i, p, "k", "cas", (exp, new), (sw, None), "ok", call, ret))
            if sw:
                state = new
    t0 = time.monotonic()
    res = check(ops, time_budget=60)
    assert res.verdict == "ok"
    assert time.monotonic() - t0 < 30
