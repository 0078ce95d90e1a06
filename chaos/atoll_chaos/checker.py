"""A linearizability checker for a key-value register with compare-and-set.

Owns: the sequential model (one register per key: get, put, delete, cas), partitioning a
history by key (P-compositionality: a KV history is linearizable iff every key's
sub-history is), the search (Wing & Gong's tree search with Lowe's just-in-time
linearization and a cache of visited (linearized set, state) configurations, as in
Porcupine), operations of unknown outcome, and shrinking a failing key history to a
small sub-history that still cannot be linearized.
Never: weakens the model to make a run pass, or calls a search that ran out of budget a
pass (that verdict is ``unknown`` and counts as a failure).

Search. Calls and returns are kept in one time-ordered doubly linked list. Walking it,
the search tries to linearize each call it meets (the model must accept the op's output
in the current state); on success the call and its return leave the list and the walk
restarts from the head; meeting a return whose call is not yet linearized means this
branch is dead: undo the last linearization and try the next candidate. A configuration
(set of linearized ops, model state) already explored is never explored again.

Unknown outcomes. An ``info`` op returns at +infinity and accepts any output: it may
take effect at any point after its call, or never (linearizing it after everything
else is the same as "never"). An ``info`` read has no effect and is dropped. ``fail``
ops certainly did not happen and are dropped. The search succeeds as soon as every op
with a known outcome is linearized.

Shrinking (:func:`shrink`) first takes steps that keep a proof -- the shortest failing
prefix (linearizability is prefix-closed: ops pending at the cut become unknown) and
dropping ops that change no state -- then removes whatever else it can while the rest
still fails, so the excerpt shows only the ops the anomaly needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .history import Op

__all__ = ["CheckResult", "KeyResult", "Verdict", "check", "check_key", "shrink", "step"]

Verdict = Literal["ok", "fail", "unknown"]
State = str | None


def step(state: State, op: Op) -> tuple[bool, State]:
    """The register model: may ``op`` (with its recorded output) run in ``state``?

    Returns (accepted, new state). An ``info`` op accepts any output.
    """
    known = op.status == "ok"
    f = op.f
    if f == "get":
        return (not known or op.out == state), state
    if f == "put":
        return True, op.arg
    if f == "delete":
        if known and bool(op.out) != (state is not None):
            return False, state
        return True, None
    # cas
    expected, new = op.arg
    matches = state == expected
    if not known:
        return True, (new if matches else state)
    swapped, previous = op.out
    if swapped != matches:
        return False, state
    if swapped and previous is not None and previous != state:
        return False, state
    return True, (new if swapped else state)


@dataclass
class KeyResult:
    """The verdict for one key's sub-history."""

    key: str
    verdict: Verdict
    ops: int
    """Ops checked (after dropping failed ops and unknown reads)."""
    seconds: float
    configurations: int
    """Distinct (linearized set, state) configurations explored."""
    best_order: list[int] = field(default_factory=list)
    """Op ids of the longest linearization found (a partial one when the key failed)."""
    shrunk: list[Op] | None = None
    """A small sub-history that still cannot be linearized (only when ``fail``)."""
    stuck: list[int] = field(default_factory=list)
    """Ops (in ``shrunk``) with a known outcome that the best attempt could not place."""


@dataclass
class CheckResult:
    """The verdict for a whole history."""

    keys: dict[str, KeyResult]
    dropped_fail: int
    dropped_info_reads: int

    @property
    def verdict(self) -> Verdict:
        """``ok`` only if every key is; ``fail`` if any key failed; else ``unknown``."""
        vs = {r.verdict for r in self.keys.values()}
        if "fail" in vs:
            return "fail"
        if "unknown" in vs:
            return "unknown"
        return "ok"

    @property
    def valid(self) -> bool:
        """Whether the history was proven linearizable."""
        return self.verdict == "ok"

    def failures(self) -> list[KeyResult]:
        """Keys that failed or could not be decided."""
        return [r for r in self.keys.values() if r.verdict != "ok"]

    def summary(self) -> str:
        """One line: verdict, keys, ops, time."""
        ops = sum(r.ops for r in self.keys.values())
        secs = sum(r.seconds for r in self.keys.values())
        bad = ", ".join(f"{r.key}={r.verdict}" for r in self.failures())
        return (
            f"{self.verdict}: {len(self.keys)} keys, {ops} ops checked "
            f"({self.dropped_fail} failed ops and {self.dropped_info_reads} unknown reads "
            f"dropped) in {secs:.2f}s" + (f"; not linearizable: {bad}" if bad else "")
        )


class _Node:
    __slots__ = ("is_call", "match", "next", "op", "prev", "time")

    def __init__(self, op: Op, is_call: bool, t: float) -> None:
        self.op = op
        self.is_call = is_call
        self.time = t
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _prepare(ops: Iterable[Op]) -> tuple[list[Op], int, int]:
    kept: list[Op] = []
    fails = info_reads = 0
    for op in ops:
        if op.status == "fail":
            fails += 1
        elif op.status == "info" and op.f == "get":
            info_reads += 1
        else:
            kept.append(op)
    return kept, fails, info_reads


def _search(ops: Sequence[Op], deadline: float, max_configs: int) -> tuple[Verdict, int, list[int]]:
    """Decide one key's history. Returns (verdict, configurations, best order)."""
    if not ops:
        return "ok", 0, []
    nodes: list[_Node] = []
    for op in ops:
        c = _Node(op, True, op.call)
        r = _Node(op, False, op.ret)
        c.match = r
        r.match = c
        nodes += [c, r]
    # At equal times a call sorts before a return: the two ops then overlap, which is
    # the permissive reading (never reports a violation the timestamps cannot prove).
    nodes.sort(key=lambda n: (n.time, 0 if n.is_call else 1))
    head = _Node(ops[0], True, -math.inf)
    prev = head
    for n in nodes:
        prev.next = n
        n.prev = prev
        prev = n
    bit = {op.id: 1 << i for i, op in enumerate(ops)}
    known_left = sum(1 for op in ops if op.status == "ok")

    def lift(c: _Node) -> None:
        for n in (c, c.match):
            assert n is not None and n.prev is not None
            n.prev.next = n.next
            if n.next is not None:
                n.next.prev = n.prev

    def unlift(c: _Node) -> None:
        for n in (c.match, c):
            assert n is not None and n.prev is not None
            n.prev.next = n
            if n.next is not None:
                n.next.prev = n

    state: State = None
    linearized = 0
    cache: set[tuple[int, State]] = set()
    stack: list[tuple[_Node, State]] = []
    best: list[int] = []
    entry = head.next
    steps = 0
    while True:
        if known_left == 0:
            return "ok", len(cache), [c.op.id for c, _ in stack]
        steps += 1
        if steps & 0x3FF == 0 and (time.monotonic() > deadline or len(cache) > max_configs):
            return "unknown", len(cache), best
        if entry is None:
            # only unknown returns (+inf) remain ahead: those calls need not happen
            raise AssertionError("unreachable: known ops remain but the list ended")
        if entry.is_call:
            ok, new_state = step(state, entry.op)
            if ok:
                new_lin = linearized | bit[entry.op.id]
                cfg = (new_lin, new_state)
                if cfg not in cache:
                    cache.add(cfg)
                    stack.append((entry, state))
                    if len(stack) > len(best):
                        best = [c.op.id for c, _ in stack]
                    state = new_state
                    linearized = new_lin
                    if entry.op.status == "ok":
                        known_left -= 1
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
            continue
        # a return whose call is not linearized: backtrack
        if entry.op.status != "ok":
            entry = entry.next  # an unknown op's return at +inf never forces anything
            continue
        if not stack:
            return "fail", len(cache), best
        c, state = stack.pop()
        linearized &= ~bit[c.op.id]
        if c.op.status == "ok":
            known_left += 1
        unlift(c)
        entry = c.next


def check_key(
    key: str,
    ops: Sequence[Op],
    *,
    time_budget: float = 30.0,
    max_configs: int = 5_000_000,
    shrink_failures: bool = True,
) -> KeyResult:
    """Check one key's (already filtered) history."""
    t0 = time.monotonic()
    verdict, configs, best = _search(ops, t0 + time_budget, max_configs)
    res = KeyResult(key, verdict, len(ops), time.monotonic() - t0, configs, best)
    if verdict == "fail" and shrink_failures:
        res.shrunk = shrink(ops, time_budget=time_budget)
        _, _, sbest = _search(res.shrunk, math.inf, max_configs)
        placed = set(sbest)
        res.stuck = [op.id for op in res.shrunk if op.status == "ok" and op.id not in placed]
        res.seconds = time.monotonic() - t0
    return res


def check(
    ops: Iterable[Op],
    *,
    time_budget: float = 120.0,
    max_configs_per_key: int = 5_000_000,
    shrink_failures: bool = True,
) -> CheckResult:
    """Check a whole history, key by key. ``time_budget`` is shared by all keys."""
    kept, fails, info_reads = _prepare(ops)
    by_key: dict[str, list[Op]] = {}
    for op in kept:
        by_key.setdefault(op.key, []).append(op)
    deadline = time.monotonic() + time_budget
    results: dict[str, KeyResult] = {}
    for key in sorted(by_key):
        remaining = max(1.0, deadline - time.monotonic())
        results[key] = check_key(
            key,
            by_key[key],
            time_budget=remaining,
            max_configs=max_configs_per_key,
            shrink_failures=shrink_failures,
        )
    return CheckResult(results, fails, info_reads)


# ---------------------------------------------------------------------- shrinking


def _changes_nothing(op: Op) -> bool:
    """Ops whose removal cannot turn a linearizable history into a non-linearizable one."""
    if op.status != "ok":
        return False
    if op.f == "get":
        return True
    if op.f == "cas":
        return not op.out[0]
    if op.f == "delete":
        return not op.out
    return False


def _written(op: Op) -> tuple[bool, State]:
    """(whether ``op`` may write, the value it writes)."""
    if op.f == "put":
        return True, op.arg
    if op.f == "delete":
        return True, None
    if op.f == "cas" and (op.status != "ok" or op.out[0]):
        return True, op.arg[1]
    return False, None


def _observed(op: Op) -> list[State]:
    """Values ``op`` saw (a read's result, a successful cas's expected/previous value)."""
    if op.status != "ok":
        return []
    if op.f == "get":
        return [op.out]
    if op.f == "cas" and op.out[0]:
        return [op.arg[0], op.out[1]] if op.out[1] is not None else [op.arg[0]]
    return []


def _explained(removed: Sequence[Op], rest: Sequence[Op]) -> bool:
    """Removing ``removed`` takes away no write whose value an op in ``rest`` saw."""
    seen = {v for op in rest for v in _observed(op)}
    for op in removed:
        writes, v = _written(op)
        if writes and v in seen:
            return False
    return True


def _weaken(op: Op) -> Op:
    """The same op with its outcome forgotten (completes at +infinity)."""
    return Op(op.id, op.process, op.key, op.f, op.arg, None, "info", op.call, math.inf)


def _truncate(ops: Sequence[Op], t: float) -> list[Op]:
    """The history as it stood at time ``t`` (prefix-closed)."""
    out: list[Op] = []
    for op in ops:
        if op.call > t:
            continue
        if op.ret > t and op.status == "ok":
            if op.f == "get":
                continue  # a pending read has no effect
            out.append(_weaken(op))
            continue
        out.append(op)
    return out


_SHRINK_CONFIGS = 20_000
"""Search budget of one shrinking attempt: a candidate that cannot be decided quickly
counts as "does not fail", so shrinking stays fast and still only keeps proofs."""


def _fails(ops: Sequence[Op], deadline: float) -> bool:
    verdict, _, _ = _search(ops, deadline, _SHRINK_CONFIGS)
    return verdict == "fail"


def shrink(ops: Sequence[Op], *, time_budget: float = 30.0) -> list[Op]:
    """A small sub-history of the failing ``ops`` that still cannot be linearized.

    Two phases. The first keeps a proof (if its result is not linearizable, neither is
    ``ops``): the shortest failing prefix, then dropping ops that change no state. The
    second removes other ops (chunks, then single ops, as in delta debugging) while the
    rest still fails, but never a write whose value a remaining op observed: every op
    left is needed for the anomaly and each really happened as recorded. Dropping an
    unobserved write can still remove an explanation, so the checker's verdict always
    rests on the whole history, not on this excerpt.
    """
    deadline = time.monotonic() + time_budget
    cur = list(ops)
    times = sorted({op.ret for op in cur if op.status == "ok"})
    lo, hi = 0, len(times) - 1
    while lo < hi and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        if _fails(_truncate(cur, times[mid]), deadline):
            hi = mid
        else:
            lo = mid + 1
    if times:
        cand = _truncate(cur, times[hi])
        if _fails(cand, deadline):
            cur = cand
    i = 0
    while i < len(cur) and time.monotonic() < deadline:
        if _changes_nothing(cur[i]) and _fails(cur[:i] + cur[i + 1 :], deadline):
            del cur[i]
        else:
            i += 1
    chunk = max(1, len(cur) // 2)
    while time.monotonic() < deadline:
        i = 0
        while i < len(cur) and time.monotonic() < deadline:
            cand = cur[:i] + cur[i + chunk :]
            if cand and _explained(cur[i : i + chunk], cand) and _fails(cand, deadline):
                cur = cand
            else:
                i += chunk
        if chunk == 1:
            break
        chunk = max(1, chunk // 2)
    return sorted(cur, key=lambda o: (o.call, o.id))


def explain(result: KeyResult, ops_by_id: dict[int, Op]) -> list[str]:
    """Readable lines describing a failed key: the partial order found and the stuck ops."""
    lines = [f"key {result.key!r}: {result.verdict} ({result.ops} ops)"]
    if result.shrunk is not None:
        lines.append(f"minimal failing sub-history ({len(result.shrunk)} ops):")
        for op in result.shrunk:
            end = "  ..." if op.ret == math.inf else f"{op.ret:.6f}"
            mark = "  <- cannot be placed" if op.id in result.stuck else ""
            lines.append(
                f"  #{op.id:<6} p{op.process:<3} {op.call:.6f} {end:>14}  {op.describe()}{mark}"
            )
    if result.best_order:
        order = " -> ".join(ops_by_id[i].describe() for i in result.best_order[-8:])
        lines.append(f"longest linearization found ends: {order}")
    return lines


def as_jsonable(op: Op) -> dict[str, Any]:
    """An op as a JSON-safe dict (for the artifact files)."""
    return {
        "id": op.id,
        "process": op.process,
        "key": op.key,
        "f": op.f,
        "arg": list(op.arg) if isinstance(op.arg, tuple) else op.arg,
        "out": list(op.out) if isinstance(op.out, tuple) else op.out,
        "status": op.status,
        "call": op.call,
        "ret": None if op.ret == math.inf else op.ret,
    }
