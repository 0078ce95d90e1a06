"""Property tests: invariants of the engine over random topologies, rules and histories."""

from __future__ import annotations

import itertools
import math
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.placement import (
    IsolationLevel,
    KeyspaceSpec,
    LabelSelector,
    MoveKind,
    NodeLabels,
    Pin,
    PlacementNode,
    PlacementRules,
    PlacementTable,
    compute_placement,
    table_diff,
)
from atoll.placement._topology import Topology

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def topologies(draw: st.DrawFn, min_nodes: int = 1, max_nodes: int = 9) -> list[PlacementNode]:
    n = draw(st.integers(min_nodes, max_nodes))
    nodes = []
    for i in range(n):
        zone = draw(st.sampled_from(["z1", "z2", "z3", ""]))
        rack = draw(st.sampled_from(["r1", "r2"]))
        host = draw(st.sampled_from(["", "h1", "h2"]))
        weight = draw(st.sampled_from([1.0, 1.0, 2.0, 0.5]))
        draining = draw(st.integers(0, 5)) == 0
        ssd = draw(st.booleans())
        nodes.append(
            PlacementNode(
                f"n{i}",
                NodeLabels(zone, rack, host, {"disk": "ssd" if ssd else "hdd"}),
                weight,
                draining,
            )
        )
    return nodes


@st.composite
def specs(draw: st.DrawFn, nodes: list[PlacementNode]) -> KeyspaceSpec:
    partitions = draw(st.integers(1, 24))
    rf = draw(st.integers(1, 4))
    ids = [n.node_id for n in nodes]
    require = draw(st.sampled_from([(), (LabelSelector("disk", "ssd"),)]))
    forbid = draw(st.sampled_from([(), (LabelSelector("zone", "z3"),)]))
    pins: list[Pin] = []
    with_pin: bool = draw(st.booleans())
    if ids and with_pin:
        p = draw(st.integers(0, partitions - 1))
        chosen = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=rf, unique=True))
        leader = draw(st.sampled_from([None, chosen[0]]))
        pins.append(Pin(p, tuple(chosen), leader))
    prefer = draw(st.sampled_from([(), (LabelSelector("zone", "z1"),)]))
    level = draw(st.sampled_from(list(IsolationLevel)))
    rules = PlacementRules(
        require=require, forbid=forbid, pins=pins, prefer_leader=prefer, isolation_level=level
    )
    return KeyspaceSpec("ks", partitions, rf, rules)


def eligible(spec: KeyspaceSpec, nodes: list[PlacementNode]) -> list[PlacementNode]:
    rules = spec.rules
    return [
        n
        for n in nodes
        if not n.draining
        and n.node_id not in rules.forbid_nodes
        and all(s.matches(n) for s in rules.require)
        and not any(s.matches(n) for s in rules.forbid)
    ]


@SETTINGS
@given(topologies(), st.integers(1, 5), st.sampled_from(list(IsolationLevel)))
def test_greedy_spread_is_as_good_as_brute_force(
    nodes: list[PlacementNode], rf: int, level: IsolationLevel
) -> None:
    topo = Topology(nodes, level)
    size = min(rf, len(topo))
    greedy = topo.quality(topo.complete([], size))
    best = min(topo.quality(list(c)) for c in itertools.combinations(range(len(topo)), size))
    assert greedy == best


@SETTINGS
@given(st.data())
def test_tables_are_valid_optimal_and_stable(data: st.DataObject) -> None:
    nodes = data.draw(topologies())
    spec = data.draw(specs(nodes))
    result = compute_placement(spec, nodes, strict=False)
    table = result.table
    ok_nodes = eligible(spec, nodes)
    ok_ids = {n.node_id for n in ok_nodes}
    topo = Topology(ok_nodes, spec.rules.isolation_level)
    size = min(spec.rf, len(ok_nodes))
    pins = {pin.partition: pin for pin in spec.rules.pins}
    for p, row in enumerate(table.replicas):
        assert len(set(row)) == len(row) == size
        assert set(row) <= ok_ids
        pin = pins.get(p)
        pinned = [n for n in (pin.nodes() if pin else ()) if n in ok_ids][:size]
        assert set(pinned) <= set(row)
        if pin and pin.leader in ok_ids:
            assert row[0] == pin.leader
        # The spread is the best any set containing the pins could have.
        fixed = [topo.index[n] for n in pinned]
        free = [i for i in range(len(topo)) if i not in fixed]
        best = min(
            topo.quality(fixed + list(c)) for c in itertools.combinations(free, size - len(fixed))
        )
        assert topo.quality([topo.index[n] for n in row]) == best
    assert result.ok == (not result.violations)
    again = compute_placement(spec, nodes, table, strict=False)
    assert again.table == table


@SETTINGS
@given(st.data())
def test_any_history_of_changes_keeps_tables_valid_and_stable(data: st.DataObject) -> None:
    nodes = data.draw(topologies(min_nodes=4))
    spec = KeyspaceSpec("ks", data.draw(st.integers(1, 32)), data.draw(st.integers(1, 3)))
    table = compute_placement(spec, nodes, strict=False).table
    for step in range(3):
        action = data.draw(st.sampled_from(["add", "remove", "drain", "reweigh"]))
        if action == "add":
            nodes = [*nodes, PlacementNode(f"x{step}", NodeLabels(zone="z2", host=f"x{step}"))]
        elif action == "remove" and len(nodes) > 1:
            victim = data.draw(st.sampled_from(nodes))
            nodes = [n for n in nodes if n is not victim]
        elif action == "drain":
            victim = data.draw(st.sampled_from(nodes))
            nodes = [
                PlacementNode(n.node_id, n.labels, n.weight, draining=n is victim or n.draining)
                for n in nodes
            ]
        else:
            victim = data.draw(st.sampled_from(nodes))
            nodes = [
                PlacementNode(n.node_id, n.labels, 3.0 if n is victim else n.weight, n.draining)
                for n in nodes
            ]
        new = compute_placement(spec, nodes, table, strict=False).table
        live = {n.node_id for n in nodes if not n.draining}
        assert all(set(row) <= live for row in new.replicas)
        check_diff_applies(table, new)
        assert compute_placement(spec, nodes, new, strict=False).table == new
        table = new


def check_diff_applies(old: PlacementTable, new: PlacementTable) -> None:
    rows = [list(r) for r in old.replicas]
    lead = [r[0] if r else None for r in old.replicas]
    floor = [min(len(a), len(b)) for a, b in zip(old.replicas, new.replicas, strict=True)]
    for move in table_diff(old, new):
        row = rows[move.partition]
        if move.kind is MoveKind.ADD_REPLICA:
            assert move.node_id not in row
            row.append(move.node_id)
        elif move.kind is MoveKind.REMOVE_REPLICA:
            if new.replicas[move.partition]:
                assert move.node_id != lead[move.partition], "removes the current leader"
            row.remove(move.node_id)
            assert len(row) >= floor[move.partition], "dropped below the replica count"
            if not row:  # no node may hold it any more (every other one drains or left)
                lead[move.partition] = None
        else:
            assert move.node_id in row
            assert move.from_node == lead[move.partition]
            lead[move.partition] = move.node_id
    for p, want in enumerate(new.replicas):
        assert set(rows[p]) == set(want)
        assert lead[p] == (want[0] if want else None)


@SETTINGS
@given(
    st.integers(4, 20),
    st.integers(1, 200),
    st.integers(1, 3),
    st.floats(0.05, 0.5),
    st.data(),
)
def test_flat_clusters_are_bounded_and_removal_moves_only_the_lost_replicas(
    n: int, parts: int, rf: int, eps: float, data: st.DataObject
) -> None:
    nodes = [PlacementNode(f"n{i:02d}") for i in range(n)]
    spec = KeyspaceSpec("ks", parts, rf)
    table = compute_placement(spec, nodes, epsilon=eps).table
    per_node = Counter(x for row in table.replicas for x in row)
    assert max(per_node.values()) <= math.ceil(parts * rf / n * (1 + eps))
    victim = data.draw(st.sampled_from(nodes))
    survivors = [x for x in nodes if x is not victim]
    after = compute_placement(spec, survivors, table, epsilon=eps).table
    adds = [m for m in table_diff(table, after) if m.kind is MoveKind.ADD_REPLICA]
    removes = [m for m in table_diff(table, after) if m.kind is MoveKind.REMOVE_REPLICA]
    assert {m.node_id for m in removes} <= {victim.node_id}
    assert len(adds) == len(table.partitions_of(victim.node_id))
    per_node = Counter(x for row in after.replicas for x in row)
    assert max(per_node.values()) <= math.ceil(parts * rf / (n - 1) * (1 + eps))


@SETTINGS
@given(st.integers(4, 20), st.integers(50, 300), st.integers(1, 3))
def test_flat_clusters_adding_a_node_only_moves_replicas_onto_it(
    n: int, parts: int, rf: int
) -> None:
    nodes = [PlacementNode(f"n{i:02d}") for i in range(n)]
    spec = KeyspaceSpec("ks", parts, rf)
    table = compute_placement(spec, nodes).table
    after = compute_placement(spec, [*nodes, PlacementNode("new")], table).table
    adds = [m for m in table_diff(table, after) if m.kind is MoveKind.ADD_REPLICA]
    assert {m.node_id for m in adds} <= {"new"}
    assert len(adds) <= math.ceil(parts * rf / (n + 1))
    assert len(adds) >= math.floor(parts * rf / (n + 1) * 0.75)
