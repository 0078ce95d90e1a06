"""compute_placement: spread, balance, stickiness, rules, draining, strictness."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from atoll.core import InvalidRequest, MemberInfo
from atoll.placement import (
    IsolationLevel,
    KeyspaceSpec,
    LabelSelector,
    MoveKind,
    NodeLabels,
    Pin,
    PlacementError,
    PlacementNode,
    PlacementRuleError,
    PlacementRules,
    PlacementTable,
    ViolationKind,
    compute_placement,
    placement_stats,
    table_diff,
)


def node(
    nid: str,
    zone: str = "",
    rack: str = "",
    host: str = "",
    *,
    weight: float = 1.0,
    draining: bool = False,
    **tags: str,
) -> PlacementNode:
    return PlacementNode(nid, NodeLabels(zone, rack, host, tags), weight, draining)


def cluster(n: int, zones: int = 3, racks: int = 2, start: int = 0) -> list[PlacementNode]:
    """n nodes round-robin over zones, racks within zones, one host each."""
    return [
        node(f"n{i:03d}", f"z{i % zones}", f"r{(i // zones) % racks}", f"h{i}")
        for i in range(start, start + n)
    ]


def flat(n: int, start: int = 0) -> list[PlacementNode]:
    """n unlabelled nodes: one zone, one rack, each its own host."""
    return [node(f"n{i:03d}") for i in range(start, start + n)]


def loads(table: PlacementTable) -> Counter[str]:
    return Counter(n for row in table.replicas for n in row)


def leaders(table: PlacementTable) -> Counter[str]:
    return Counter(row[0] for row in table.replicas if row)


def zone_of(nodes: list[PlacementNode]) -> dict[str, str]:
    return {n.node_id: n.labels.zone for n in nodes}


def moved_replicas(old: PlacementTable, new: PlacementTable) -> int:
    return sum(m.kind is MoveKind.ADD_REPLICA for m in table_diff(old, new))


# -- spread -----------------------------------------------------------------------------


def test_every_partition_spans_rf_distinct_zones() -> None:
    nodes = cluster(12)
    table = compute_placement(KeyspaceSpec("ks", 256, 3), nodes).table
    zones = zone_of(nodes)
    for row in table.replicas:
        assert len(row) == 3
        assert len({zones[n] for n in row}) == 3


def test_fewer_zones_than_rf_spreads_two_plus_one_and_never_shares_a_host() -> None:
    nodes = [node(f"a{i}", "z1", "r1", f"ha{i}") for i in range(4)]
    nodes += [node(f"b{i}", "z2", "r1", f"hb{i}") for i in range(4)]
    table = compute_placement(KeyspaceSpec("ks", 200, 3), nodes).table
    zones = zone_of(nodes)
    hosts = {n.node_id: n.labels.host for n in nodes}
    for row in table.replicas:
        assert sorted(Counter(zones[n] for n in row).values()) == [1, 2]
        assert len({hosts[n] for n in row}) == 3
    # Each zone takes the extra replica in about half the partitions.
    per_zone = Counter(zones[n] for row in table.replicas for n in row)
    assert per_zone["z1"] == per_zone["z2"] == 300


def test_racks_are_spread_within_a_zone() -> None:
    nodes = [node(f"n{r}{h}", "z", f"r{r}", f"h{r}{h}") for r in range(3) for h in range(3)]
    table = compute_placement(KeyspaceSpec("ks", 128, 3), nodes).table
    for row in table.replicas:
        assert len({n[1] for n in row}) == 3  # n<rack><host>


def test_two_replicas_share_a_host_only_when_unavoidable() -> None:
    # Two hosts, three nodes: rf 3 must put two replicas on host h1, never on one node.
    nodes = [node("a", host="h1"), node("b", host="h1"), node("c", host="h2")]
    table = compute_placement(KeyspaceSpec("ks", 16, 3), nodes).table
    assert all(sorted(row) == ["a", "b", "c"] for row in table.replicas)
    stats = placement_stats(table, nodes)
    assert stats.partitions_with_shared_host == 16
    # With a third host available, nothing shares a host.
    nodes.append(node("d", host="h3"))
    table = compute_placement(KeyspaceSpec("ks", 16, 3), nodes, table).table
    assert placement_stats(table, nodes).partitions_with_shared_host == 0


def test_small_zone_holds_a_replica_of_everything_diversity_beats_balance() -> None:
    nodes = [node("solo", "z1")] + [node(f"n{i}", f"z{2 + i % 2}") for i in range(8)]
    table = compute_placement(KeyspaceSpec("ks", 64, 3), nodes).table
    assert loads(table)["solo"] == 64
    others = [c for n, c in loads(table).items() if n != "solo"]
    assert max(others) - min(others) <= 1


# -- balance ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "parts", "rf"), [(5, 64, 3), (12, 256, 3), (100, 1024, 3), (7, 100, 5)]
)
def test_replica_and_leader_counts_stay_within_the_bound(n: int, parts: int, rf: int) -> None:
    eps = 0.1
    table = compute_placement(KeyspaceSpec("ks", parts, rf), flat(n), epsilon=eps).table
    per_node = loads(table)
    bound = math.ceil(parts * rf / n * (1 + eps))
    assert len(per_node) == n
    assert max(per_node.values()) <= bound
    assert max(per_node.values()) - min(per_node.values()) <= 1
    lead = leaders(table)
    assert max(lead.values()) - min(lead.values(), default=0) <= 1
    assert sum(lead.values()) == parts


def test_weights_are_respected() -> None:
    nodes = [node("big", weight=2.0), *flat(4)]
    table = compute_placement(KeyspaceSpec("ks", 300, 3), nodes).table
    per_node = loads(table)
    # Twice the share of the others would be 360 > 300: at most one replica per partition.
    assert 295 <= per_node["big"] <= 300
    assert all(147 <= per_node[f"n{i:03d}"] <= 153 for i in range(4))
    lead = leaders(table)
    assert lead["big"] == 100  # weight 2 of 6: a third of the leaders
    assert all(lead[f"n{i:03d}"] == 50 for i in range(4))


def test_zone_aware_bound_holds_for_balanced_zones() -> None:
    nodes = cluster(12)
    table = compute_placement(KeyspaceSpec("ks", 512, 3), nodes, epsilon=0.05).table
    per_node = loads(table)
    assert max(per_node.values()) <= math.ceil(512 * 3 / 12 * 1.05)
    assert min(per_node.values()) >= 512 * 3 // 12 - 1


# -- stickiness and movement ------------------------------------------------------------


def test_recomputing_with_nothing_changed_moves_nothing() -> None:
    nodes = cluster(9)
    spec = KeyspaceSpec("ks", 128, 3)
    first = compute_placement(spec, nodes).table
    again = compute_placement(spec, nodes, first).table
    assert again == first
    assert table_diff(first, again) == []


def test_adding_one_node_moves_about_its_share() -> None:
    spec = KeyspaceSpec("ks", 1024, 3)
    before = compute_placement(spec, flat(10)).table
    after = compute_placement(spec, flat(11), before).table
    moved = moved_replicas(before, after)
    fair = 3 * 1024 / 11  # 279.3
    assert 0.9 * fair <= moved <= 1.1 * fair, moved
    # Every move lands on the new node: nothing is reshuffled between old nodes.
    adds = {m.node_id for m in table_diff(before, after) if m.kind is MoveKind.ADD_REPLICA}
    assert adds == {"n010"}


def test_removing_one_node_moves_only_its_replicas() -> None:
    spec = KeyspaceSpec("ks", 1024, 3)
    before = compute_placement(spec, flat(10)).table
    survivors = [n for n in flat(10) if n.node_id != "n004"]
    after = compute_placement(spec, survivors, before).table
    removes = [m for m in table_diff(before, after) if m.kind is MoveKind.REMOVE_REPLICA]
    assert {m.node_id for m in removes} == {"n004"}
    assert moved_replicas(before, after) == len(before.partitions_of("n004"))
    per_node = loads(after)
    assert max(per_node.values()) - min(per_node.values()) <= 2


def test_adding_a_node_to_one_zone_moves_only_within_that_zone() -> None:
    spec = KeyspaceSpec("ks", 600, 3)
    nodes = cluster(9)  # three zones of three
    before = compute_placement(spec, nodes).table
    newcomer = node("n100", "z1", "r0", "h100")
    after = compute_placement(spec, [*nodes, newcomer], before).table
    zones = zone_of([*nodes, newcomer])
    for m in table_diff(before, after):
        if m.kind is not MoveKind.TRANSFER_LEADER:
            assert zones[m.node_id] == "z1"
    assert moved_replicas(before, after) == 600 // 4  # z1's 600 replicas over 4 nodes


def test_an_overloaded_node_sheds_down_to_the_bound_and_no_further() -> None:
    spec = KeyspaceSpec("ks", 60, 3)
    nodes = flat(6)
    skewed = PlacementTable(
        "ks", [("n000", "n001", "n002") if p % 2 else ("n000", "n003", "n004") for p in range(60)]
    )
    table = compute_placement(spec, nodes, skewed, epsilon=0.2).table
    per_node = loads(table)
    assert max(per_node.values()) <= math.ceil(30 * 1.2)
    assert per_node["n000"] == 36  # kept everything the bound allows


def test_leadership_moves_only_as_much_as_balance_needs() -> None:
    spec = KeyspaceSpec("ks", 64, 3)
    nodes = flat(4)
    first = compute_placement(spec, nodes).table
    rotated = PlacementTable("ks", [row[1:] + row[:1] for row in first.replicas])
    excess = sum(max(0, c - 16) for c in leaders(rotated).values())
    assert excess > 0
    again = compute_placement(spec, nodes, rotated).table
    assert set(leaders(again).values()) == {16}
    changed = sum(a[0] != b[0] for a, b in zip(again.replicas, rotated.replicas, strict=True))
    assert excess <= changed <= 2 * excess
    assert [set(r) for r in again.replicas] == [set(r) for r in rotated.replicas]


# -- draining ---------------------------------------------------------------------------


def test_draining_node_loses_everything_and_gets_nothing() -> None:
    spec = KeyspaceSpec("ks", 128, 3)
    nodes = cluster(9)
    before = compute_placement(spec, nodes).table
    draining = [
        PlacementNode(n.node_id, n.labels, n.weight, draining=n.node_id == "n004") for n in nodes
    ]
    after = compute_placement(spec, draining, before).table
    assert "n004" not in after.node_ids()
    assert moved_replicas(before, after) == len(before.partitions_of("n004"))


# -- rules ------------------------------------------------------------------------------


def test_require_and_forbid_labels() -> None:
    nodes = cluster(12, zones=4)
    rules = PlacementRules(
        require=[LabelSelector("zone", {"z0", "z1", "z2"})],
        forbid=[LabelSelector("rack", "r1")],
        forbid_nodes={"n000"},
    )
    table = compute_placement(KeyspaceSpec("ks", 64, 3, rules), nodes).table
    by_id = {n.node_id: n for n in nodes}
    used = table.node_ids()
    assert "n000" not in used
    assert all(by_id[n].labels.zone != "z3" and by_id[n].labels.rack != "r1" for n in used)


def test_tags_select_nodes() -> None:
    nodes = [node(f"n{i}", f"z{i % 3}", disk="ssd" if i < 6 else "hdd") for i in range(9)]
    rules = PlacementRules(require=[LabelSelector("disk", "ssd")])
    table = compute_placement(KeyspaceSpec("ks", 32, 3, rules), nodes).table
    assert table.node_ids() == {f"n{i}" for i in range(6)}


def test_pins_fix_replicas_and_leaders() -> None:
    nodes = cluster(9)
    rules = PlacementRules(
        pins=[Pin(0, ("n001", "n002")), Pin(5, leader="n007"), Pin(6, ("n003",), leader="n004")]
    )
    spec = KeyspaceSpec("ks", 16, 3, rules)
    table = compute_placement(spec, nodes).table
    assert {"n001", "n002"} <= set(table.replicas_of(0))
    assert table.leader_of(5) == "n007"
    assert table.leader_of(6) == "n004"
    assert "n003" in table.replicas_of(6)
    # Pins survive recomputation and balancing.
    again = compute_placement(spec, nodes, table).table
    assert again == table


def test_prefer_leader_puts_leaders_in_the_preferred_zone() -> None:
    nodes = cluster(9)
    rules = PlacementRules(prefer_leader=[LabelSelector("zone", "z2")])
    table = compute_placement(KeyspaceSpec("ks", 90, 3, rules), nodes).table
    zones = zone_of(nodes)
    assert all(zones[row[0]] == "z2" for row in table.replicas)
    lead = leaders(table)
    assert sorted(lead.values()) == [30, 30, 30]


def test_isolation_level_zone_is_a_hard_requirement() -> None:
    nodes = cluster(8, zones=2)
    rules = PlacementRules(isolation_level=IsolationLevel.ZONE)
    with pytest.raises(PlacementError, match=r"needs rf=3 distinct zones .* 2 eligible: z0, z1"):
        compute_placement(KeyspaceSpec("ks", 8, 3, rules), nodes)
    result = compute_placement(KeyspaceSpec("ks", 8, 3, rules), nodes, strict=False)
    assert {v.kind for v in result.violations} == {ViolationKind.ISOLATION}
    assert all(len(row) == 3 for row in result.table.replicas)


# -- errors and best effort ---------------------------------------------------------------


def test_too_few_eligible_nodes_says_how_many_and_why() -> None:
    nodes = [*flat(2), node("d", draining=True), node("x", zone="bad")]
    rules = PlacementRules(forbid=[LabelSelector("zone", "bad")])
    spec = KeyspaceSpec("users", 8, 3, rules)
    with pytest.raises(PlacementError) as info:
        compute_placement(spec, nodes)
    err = info.value
    assert isinstance(err, InvalidRequest)
    assert "needs rf=3 eligible nodes, 2 eligible of 4 live" in err.message
    assert "1 draining" in err.message
    assert "rules.forbid[0] (zone in {bad})" in err.message
    assert err.details["eligible"] == 2
    assert err.details["needed"] == 3


def test_best_effort_under_replicates_and_says_so() -> None:
    spec = KeyspaceSpec("users", 8, 3)
    result = compute_placement(spec, flat(2), strict=False)
    assert not result.ok
    assert [v.kind for v in result.violations] == [ViolationKind.UNDER_REPLICATED]
    assert all(sorted(row) == ["n000", "n001"] for row in result.table.replicas)
    empty = compute_placement(spec, [], strict=False)
    assert all(row == () for row in empty.table.replicas)


def test_pin_to_a_draining_node() -> None:
    nodes = [*flat(3), node("d", draining=True)]
    spec = KeyspaceSpec("ks", 4, 3, PlacementRules(pins=[Pin(2, leader="d")]))
    with pytest.raises(PlacementError, match=r"rules.pins\[0\] pins node 'd' .*draining"):
        compute_placement(spec, nodes)
    result = compute_placement(spec, nodes, strict=False)
    assert [v.kind for v in result.violations] == [ViolationKind.PIN_UNSATISFIED]
    assert "d" not in result.table.node_ids()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (KeyspaceSpec("", 8, 3), "keyspace name"),
        (KeyspaceSpec("ks", 0, 3), "partitions must be"),
        (KeyspaceSpec("ks", 8, 0), "rf must be"),
        (
            KeyspaceSpec("ks", 8, 3, PlacementRules(pins=[Pin(8, ("a",))])),
            r"pins\[0\]: partition 8",
        ),
        (
            KeyspaceSpec("ks", 8, 3, PlacementRules(pins=[Pin(1, ("a",)), Pin(1, ("b",))])),
            r"pins\[1\]: partition 1 is already pinned by rules.pins\[0\]",
        ),
        (
            KeyspaceSpec("ks", 8, 2, PlacementRules(pins=[Pin(1, ("a", "b"), leader="c")])),
            r"pins\[0\]: pins 3 nodes .* rf is 2",
        ),
        (KeyspaceSpec("ks", 8, 3, PlacementRules(pins=[Pin(1)])), "no replica and no leader"),
        (
            KeyspaceSpec("ks", 8, 3, PlacementRules(pins=[Pin(1, "a")], forbid_nodes={"a"})),
            "forbid_nodes forbids",
        ),
        (
            KeyspaceSpec(
                "ks",
                8,
                3,
                PlacementRules(
                    require=[LabelSelector("zone", "z1")],
                    forbid=[LabelSelector("zone", {"z1", "z2"})],
                ),
            ),
            r"require\[0\] \(zone in \{z1\}\) is entirely forbidden by rules.forbid\[0\]",
        ),
    ],
)
def test_bad_specs_name_the_rule(spec: KeyspaceSpec, match: str) -> None:
    with pytest.raises(PlacementRuleError, match=match):
        compute_placement(spec, flat(5))


def test_bad_values_are_refused_at_construction() -> None:
    with pytest.raises(PlacementRuleError, match="isolation_level: 'galaxy'"):
        PlacementRules(isolation_level="galaxy")
    with pytest.raises(PlacementRuleError, match="has no values"):
        LabelSelector("zone", ())
    with pytest.raises(PlacementError, match="weight must be finite and > 0"):
        node("a", weight=0)
    with pytest.raises(PlacementError, match="tag 'zone' is reserved"):
        NodeLabels(tags={"zone": "x"})
    with pytest.raises(PlacementError, match="listed twice"):
        compute_placement(KeyspaceSpec("ks", 4, 1), [node("a"), node("a")])
    with pytest.raises(PlacementError, match="epsilon"):
        compute_placement(KeyspaceSpec("ks", 4, 1), flat(2), epsilon=0)


def test_current_table_must_match_the_keyspace() -> None:
    spec = KeyspaceSpec("ks", 4, 1)
    with pytest.raises(PlacementError, match="keyspace 'other'"):
        compute_placement(spec, flat(2), PlacementTable.empty("other", 4))
    with pytest.raises(PlacementError, match="has 5 partitions"):
        compute_placement(spec, flat(2), PlacementTable.empty("ks", 5))


def test_from_member_copies_labels() -> None:
    member = MemberInfo("n1", "10.0.0.1:7401", zone="z1", rack="r2", host="h3", tags={"d": "s"})
    pn = PlacementNode.from_member(member, weight=2.0)
    assert (pn.label("zone"), pn.label("rack"), pn.label("host"), pn.label("d")) == (
        "z1",
        "r2",
        "h3",
        "s",
    )
    assert pn.label("node") == "n1"
    assert pn.label("missing") is None
    assert pn.weight == 2.0


def test_keyspaces_spread_independently() -> None:
    nodes = flat(10)
    a = compute_placement(KeyspaceSpec("a", 64, 3), nodes).table
    b = compute_placement(KeyspaceSpec("b", 64, 3), nodes).table
    assert a.replicas != b.replicas
