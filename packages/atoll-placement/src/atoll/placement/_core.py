"""The placement engine: partition -> replicas for one keyspace, as a pure function.

Owns: :func:`compute_placement` — eligibility, strictness, and the phases that turn the
live nodes, the rules and the current table into a new table.
Never: imports anyio, asyncio, time, random or socket, or keeps state between calls; the
same inputs give the same table on every process (determinism comes from hashing).

The phases, in order (each keeps what it can, so a stable cluster gives a stable table):

1. keep — every current replica on a live, eligible node stays, unless dropping it is the
   only way to reach the best failure-domain spread the topology allows;
2. fill — empty slots take the candidate with the lowest diversity key (new host, then
   new zone, then new rack), then a node under its load bound, then the least loaded
   relative to its expected share, then the highest rendezvous hash;
3. relieve — a node above its bound ``ceil(expected * (1 + epsilon))`` hands replicas
   (those it ranks lowest by rendezvous hash) to nodes under theirs;
4. top up — a node below ``floor(expected * (1 - epsilon))`` (a newly added node) takes
   replicas, from nodes above their expected share, of the partitions it ranks highest
   by rendezvous hash, until it reaches its expected share;
5. leaders — each partition keeps its leader when it is still a most-preferred replica;
   then leadership moves along augmenting paths until no node can hand one to a less
   loaded (weight-relative) node.

No phase trades diversity away: a replica only moves when the partition keeps the best
spread available, and diversity wins over balance when the two conflict (a zone with one
node must hold a replica of every partition when rf equals the zone count).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ._errors import PlacementError
from ._hashing import keyspace_seed, rendezvous_hash
from ._model import (
    DEFAULT_EPSILON,
    IsolationLevel,
    KeyspaceSpec,
    PlacementNode,
    PlacementResult,
    PlacementTable,
    PlacementViolation,
    ViolationKind,
)
from ._topology import Key, Topology
from ._validate import validate_spec

__all__ = ["compute_placement"]

_FUZZ = 1e-9


def compute_placement(
    spec: KeyspaceSpec,
    nodes: Iterable[PlacementNode],
    current: PlacementTable | None = None,
    *,
    strict: bool = True,
    epsilon: float = DEFAULT_EPSILON,
) -> PlacementResult:
    """Place every partition of ``spec`` on the live ``nodes``, moving as little as it can.

    ``nodes`` are the live nodes (dead ones left out; draining ones included with
    ``draining=True``). ``current`` is the table in force, if any: its replicas stay where
    they are valid, spread as well as possible and within the load bound. ``epsilon`` is
    the bounded-load slack: no node holds more than ``ceil(expected * (1 + epsilon))``
    replicas, where ``expected`` is its weight-proportional share after zone/rack/host
    spreading, unless spreading itself forces more.

    With ``strict=True`` (the default) an unsatisfiable spec raises
    :class:`PlacementError` saying how many nodes or domains were eligible and how many
    were needed. With ``strict=False`` the best effort is returned with its violations
    (fewer replicas than rf, shared isolation domains, unsatisfied pins).

    Raises :class:`PlacementRuleError` for a malformed spec and :class:`PlacementError`
    for duplicate node ids or a ``current`` table of another keyspace or partition count.
    """
    validate_spec(spec)
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise PlacementError(f"epsilon must be a number, got {epsilon!r}")
    if not math.isfinite(epsilon) or not 0 < epsilon <= 10:
        raise PlacementError(f"epsilon must be in (0, 10], got {epsilon!r}")
    live = list(nodes)
    seen: set[str] = set()
    for node in live:
        if not isinstance(node, PlacementNode):
            raise PlacementError(f"nodes must be PlacementNode, got {type(node).__name__}")
        if node.node_id in seen:
            raise PlacementError(f"node {node.node_id!r} is listed twice")
        seen.add(node.node_id)
    if current is not None:
        if current.keyspace != spec.name:
            raise PlacementError(
                f"current table is for keyspace {current.keyspace!r}, not {spec.name!r}"
            )
        if current.partitions != spec.partitions:
            raise PlacementError(
                f"current table of {spec.name!r} has {current.partitions} partitions, the "
                f"spec {spec.partitions}; a keyspace's partition count is fixed"
            )
    return _Planner(spec, live, current, strict, float(epsilon)).run()


def _exclusion(spec: KeyspaceSpec, node: PlacementNode) -> str | None:
    """Why ``node`` may hold no replica of ``spec``'s keyspace, or None if it may."""
    rules = spec.rules
    if node.draining:
        return "draining"
    if node.node_id in rules.forbid_nodes:
        return "rules.forbid_nodes"
    for i, sel in enumerate(rules.require):
        if not sel.matches(node):
            return f"rules.require[{i}] ({sel})"
    for i, sel in enumerate(rules.forbid):
        if sel.matches(node):
            return f"rules.forbid[{i}] ({sel})"
    return None


class _Planner:
    """One run of the engine; discarded afterwards."""

    def __init__(
        self,
        spec: KeyspaceSpec,
        live: list[PlacementNode],
        current: PlacementTable | None,
        strict: bool,
        epsilon: float,
    ) -> None:
        self.spec = spec
        self.strict = strict
        self.epsilon = epsilon
        self.current = current
        self.live = {n.node_id: n for n in live}
        self.excluded = {n.node_id: why for n in live if (why := _exclusion(spec, n))}
        eligible = [n for n in live if n.node_id not in self.excluded]
        self.topo = Topology(eligible, spec.rules.isolation_level)
        self.seed = keyspace_seed(spec.name)
        self.violations: list[PlacementViolation] = []
        self.rf = spec.rf
        self.pins: list[list[int]] = [[] for _ in range(spec.partitions)]
        self.leader_pin: list[int | None] = [None] * spec.partitions
        self._qstar: dict[tuple[int, ...], Key] = {}
        self.domain_shortage = False

    # -- checks -----------------------------------------------------------------------

    def _check_capacity(self) -> None:
        spec, topo = self.spec, self.topo
        needed = spec.rf
        if len(topo) < needed:
            reasons: dict[str, int] = {}
            for why in self.excluded.values():
                reasons[why] = reasons.get(why, 0) + 1
            detail = ", ".join(f"{count} {why}" for why, count in sorted(reasons.items()))
            msg = (
                f"keyspace {spec.name!r} needs rf={needed} eligible nodes, "
                f"{len(topo)} eligible of {len(self.live)} live"
                + (f" (excluded: {detail})" if detail else "")
            )
            if self.strict:
                raise PlacementError(
                    msg, keyspace=spec.name, eligible=len(topo), needed=needed, level="node"
                )
            self.rf = len(topo)
            self.violations.append(
                PlacementViolation(
                    ViolationKind.UNDER_REPLICATED,
                    msg + f"; placing {self.rf} replicas per partition",
                    tuple(range(spec.partitions)),
                )
            )
            return
        level = spec.rules.isolation_level
        domains = topo.domain_count()
        if level is not IsolationLevel.NODE and domains < needed:
            names = sorted({topo.domain_name(i) for i in range(len(topo))})
            msg = (
                f"keyspace {spec.name!r} needs rf={needed} distinct {level.value}s "
                f"(isolation_level={level.value}), {domains} eligible: {', '.join(names)}"
            )
            if self.strict:
                raise PlacementError(
                    msg, keyspace=spec.name, eligible=domains, needed=needed, level=level.value
                )
            self.domain_shortage = True
            self.violations.append(
                PlacementViolation(
                    ViolationKind.ISOLATION,
                    msg + "; some partitions share a domain",
                    tuple(range(spec.partitions)),
                )
            )

    def _resolve_pins(self) -> None:
        spec, topo = self.spec, self.topo
        for i, pin in enumerate(spec.rules.pins):
            rule = f"rules.pins[{i}]"
            resolved: list[int] = []
            for name in pin.nodes():
                if name in topo.index:
                    resolved.append(topo.index[name])
                    continue
                why = self.excluded.get(name, "not a live node")
                msg = (
                    f"keyspace {spec.name!r}: {rule} pins node {name!r} to partition "
                    f"{pin.partition}, but it is excluded ({why})"
                )
                if self.strict:
                    raise PlacementError(
                        msg, keyspace=spec.name, partition=pin.partition, rule=rule
                    )
                self.violations.append(
                    PlacementViolation(ViolationKind.PIN_UNSATISFIED, msg, (pin.partition,), name)
                )
            resolved = resolved[: self.rf]
            isolated = {topo.iso[n] for n in resolved}
            if len(isolated) < len(resolved):
                level = spec.rules.isolation_level.value
                msg = (
                    f"keyspace {spec.name!r}: {rule} pins partition {pin.partition} to "
                    f"nodes sharing a {level} (isolation_level={level})"
                )
                if self.strict:
                    raise PlacementError(
                        msg, keyspace=spec.name, partition=pin.partition, rule=rule
                    )
                self.violations.append(
                    PlacementViolation(ViolationKind.ISOLATION, msg, (pin.partition,))
                )
            self.pins[pin.partition] = resolved
            if pin.leader is not None and pin.leader in topo.index:
                self.leader_pin[pin.partition] = topo.index[pin.leader]

    # -- helpers ----------------------------------------------------------------------

    def qstar(self, p: int) -> Key:
        """The best quality a full replica set of partition ``p`` can reach."""
        pins = tuple(self.pins[p])
        best = self._qstar.get(pins)
        if best is None:
            best = self.topo.quality(self.topo.complete(pins, self.rf))
            self._qstar[pins] = best
        return best

    def hrw(self, p: int, i: int) -> int:
        return rendezvous_hash(self.seed, p, self.topo.ids[i])

    def ratio(self, i: int) -> float:
        return self.load[i] / self.expected[i] if self.expected[i] > 0 else math.inf

    def acceptable(self, p: int, members: Sequence[int]) -> bool:
        """Whether ``members`` (possibly partial) can still reach partition p's best spread."""
        topo = self.topo
        quality = topo.quality(topo.complete(members, self.rf))
        return quality <= self.qstar(p)

    # -- phases -----------------------------------------------------------------------

    def run(self) -> PlacementResult:
        self._check_capacity()
        self._resolve_pins()
        topo, spec = self.topo, self.spec
        n = len(topo)
        parts = spec.partitions
        shares = topo.expected_shares(self.rf)
        self.expected = [s * parts for s in shares]
        self.cap = [math.ceil(e * (1 + self.epsilon) - _FUZZ) for e in self.expected]
        self.floor = [math.floor(e * (1 - self.epsilon) + _FUZZ) for e in self.expected]
        self.target = [math.floor(e + _FUZZ) for e in self.expected]
        self.load = [0] * n
        self.rows: list[list[int]] = [[] for _ in range(parts)]
        if n and self.rf:
            self._keep()
            self._fill()
            self._rebalance()
        leaders = self._leaders() if n and self.rf else [None] * parts
        out: list[tuple[str, ...]] = []
        for p, row in enumerate(self.rows):
            lead = leaders[p]
            ordered = ([lead] if lead is not None else []) + [i for i in row if i != lead]
            out.append(tuple(topo.ids[i] for i in ordered))
        if not self.strict:
            self._report_isolation()
        return PlacementResult(PlacementTable(spec.name, out), tuple(self.violations))

    def _keep(self) -> None:
        topo, current = self.topo, self.current
        for p in range(self.spec.partitions):
            row = list(self.pins[p])
            pinned = len(row)
            if current is not None:
                for name in current.replicas[p]:
                    i = topo.index.get(name)
                    if i is not None and i not in row:
                        row.append(i)
            # Too many (rf lowered) or a spread worse than the best: shed the replica that
            # collides most with the others, the latest one on ties (the leader goes last).
            while len(row) > pinned and (len(row) > self.rf or not self.acceptable(p, row)):
                worst = max(
                    range(pinned, len(row)),
                    key=lambda k: (topo.key(row[k], row[:k] + row[k + 1 :]), k),
                )
                del row[worst]
            self.rows[p] = row
            for i in row:
                self.load[i] += 1

    def _fill(self) -> None:
        topo = self.topo
        for p, row in enumerate(self.rows):
            if len(row) >= self.rf:
                continue
            taken = set(row)
            order = sorted(
                (i for i in range(len(topo)) if i not in taken),
                key=lambda i: (self.load[i] >= self.cap[i], self.ratio(i), -self.hrw(p, i)),
            )
            while len(row) < self.rf:
                want = topo.best_key(row)
                if want is None:
                    break
                for i in order:
                    if i not in taken and topo.key(i, row) == want:
                        row.append(i)
                        taken.add(i)
                        self.load[i] += 1
                        break

    def _rebalance(self) -> None:
        # Relieving never pushes a node over its bound and topping up never takes a node
        # below its expected share, so excess and deficit only shrink: this terminates.
        while True:
            moved = self._relieve()
            moved += self._top_up()
            if not moved:
                return

    def _swap(self, p: int, out: int, into: int) -> None:
        row = self.rows[p]
        row[row.index(out)] = into
        self.load[out] -= 1
        self.load[into] += 1

    def _relieve(self) -> int:
        topo, moved = self.topo, 0
        over = [i for i in range(len(topo)) if self.load[i] > self.cap[i]]
        for x in sorted(over, key=lambda i: (-self.ratio(i), i)):
            mine = [p for p, row in enumerate(self.rows) if x in row and x not in self.pins[p]]
            for p in sorted(mine, key=lambda p: (self.hrw(p, x), p)):
                if self.load[x] <= self.cap[x]:
                    break
                row = self.rows[p]
                rest = [i for i in row if i != x]
                best: tuple[float, int, int] | None = None
                for v in range(len(topo)):
                    if v in row or self.load[v] >= self.cap[v]:
                        continue
                    if topo.quality([*rest, v]) > self.qstar(p):
                        continue
                    cand = (self.ratio(v), -self.hrw(p, v), v)
                    if best is None or cand < best:
                        best = cand
                if best is not None:
                    self._swap(p, x, best[2])
                    moved += 1
        return moved

    def _top_up(self) -> int:
        topo, moved = self.topo, 0
        under = [i for i in range(len(topo)) if self.load[i] < self.floor[i]]
        for u in sorted(under, key=lambda i: (self.ratio(i), i)):
            goal = min(self.target[u], self.cap[u])
            if self.load[u] >= goal:
                continue
            order = sorted(range(self.spec.partitions), key=lambda p: (-self.hrw(p, u), p))
            for p in order:
                if self.load[u] >= goal:
                    break
                row = self.rows[p]
                if u in row:
                    continue
                donors = [
                    d
                    for d in row
                    if d not in self.pins[p] and self.load[d] > self.expected[d] + _FUZZ
                ]
                donors.sort(key=lambda d: (-self.ratio(d), d))
                for d in donors:
                    rest = [i for i in row if i != d]
                    if topo.quality([*rest, u]) <= self.qstar(p):
                        self._swap(p, d, u)
                        moved += 1
                        break
        return moved

    def _leaders(self) -> list[int | None]:
        topo, spec = self.topo, self.spec
        prefer = spec.rules.prefer_leader
        rank = [
            next((k for k, sel in enumerate(prefer) if sel.matches(node)), len(prefer))
            for node in topo.nodes
        ]
        weight = topo.weight
        count = [0] * len(topo)
        cands: list[list[int]] = []
        leader: list[int | None] = [None] * spec.partitions
        for p, row in enumerate(self.rows):
            pinned = self.leader_pin[p]
            if pinned is not None and pinned in row:
                cands.append([pinned])
            elif row:
                top = min(rank[i] for i in row)
                cands.append([i for i in row if rank[i] == top])
            else:
                cands.append([])
            old = self.current.leader_of(p) if self.current is not None else None
            j = topo.index.get(old) if old is not None else None
            if j is not None and j in cands[p]:
                leader[p] = j
                count[j] += 1
        for p in range(spec.partitions):
            if leader[p] is None and cands[p]:
                pick = min(cands[p], key=lambda i: ((count[i] + 1) / weight[i], -self.hrw(p, i)))
                leader[p] = pick
                count[pick] += 1
        _balance_leaders(leader, cands, count, weight)
        return leader

    def _report_isolation(self) -> None:
        """Report partitions that share an isolation domain (best effort only)."""
        topo = self.topo
        if self.spec.rules.isolation_level is IsolationLevel.NODE or self.domain_shortage:
            return  # nothing to report, or already reported once for the whole keyspace
        reported = {v.partitions[0] for v in self.violations if v.kind is ViolationKind.ISOLATION}
        shared = [
            p
            for p, row in enumerate(self.rows)
            if p not in reported and len({topo.iso[i] for i in row}) < len(row)
        ]
        if shared:
            level = self.spec.rules.isolation_level.value
            self.violations.append(
                PlacementViolation(
                    ViolationKind.ISOLATION,
                    f"{len(shared)} partitions have two replicas in one {level}",
                    tuple(shared),
                )
            )


def _balance_leaders(
    leader: list[int | None], cands: list[list[int]], count: list[int], weight: list[float]
) -> None:
    """Move leaderships along augmenting paths until no move lowers the load spread.

    A path a -> ... -> z hands one leadership from a to z through partitions whose
    candidates link consecutive nodes; it is taken when
    ``(2*count[z] + 1) / w[z] < (2*count[a] - 1) / w[a]``, which strictly lowers
    ``sum(count**2 / w)`` (so the loop ends) and, for equal weights, means
    ``count[z] + 1 < count[a]``: the result is a min-max balanced assignment.
    """
    led: list[set[int]] = [set() for _ in count]
    for p, i in enumerate(leader):
        if i is not None:
            led[i].add(p)
    capable = sorted({i for cs in cands for i in cs})
    while True:
        floor_cost = min(((2 * count[z] + 1) / weight[z] for z in capable), default=math.inf)
        sources = [a for a in capable if (2 * count[a] - 1) / weight[a] > floor_cost + 1e-12]
        sources.sort(key=lambda a: (-(2 * count[a] - 1) / weight[a], a))
        for a in sources:
            path = _augmenting_path(a, leader, cands, count, weight, led)
            if path is not None:
                for p, new in path:
                    old = leader[p]
                    assert old is not None
                    led[old].discard(p)
                    led[new].add(p)
                    leader[p] = new
                count[a] -= 1
                count[path[-1][1]] += 1
                break
        else:
            return


def _augmenting_path(
    source: int,
    leader: list[int | None],
    cands: list[list[int]],
    count: list[int],
    weight: list[float],
    led: list[set[int]],
) -> list[tuple[int, int]] | None:
    """Breadth-first search for the shortest path from ``source`` to a lighter node."""
    limit = (2 * count[source] - 1) / weight[source]
    parent: dict[int, tuple[int, int] | None] = {source: None}
    frontier = [source]
    while frontier:
        nxt: list[int] = []
        for a in frontier:
            for p in sorted(led[a]):
                for b in cands[p]:
                    if b in parent:
                        continue
                    parent[b] = (a, p)
                    if (2 * count[b] + 1) / weight[b] < limit - 1e-12:
                        path: list[tuple[int, int]] = []
                        node = b
                        while (step := parent[node]) is not None:
                            prev, part = step
                            path.append((part, node))
                            node = prev
                        path.reverse()
                        return path
                    nxt.append(b)
        frontier = nxt
    return None
