"""table_diff ordering and placement_stats figures."""

from __future__ import annotations

import pytest

from atoll.placement import (
    KeyspaceSpec,
    MoveKind,
    NodeLabels,
    PlacementError,
    PlacementNode,
    PlacementTable,
    ReplicaMove,
    compute_placement,
    placement_stats,
)
from atoll.placement import table_diff as diff


def test_adds_then_leader_transfer_then_removes_per_partition() -> None:
    old = PlacementTable("ks", [("a", "b", "c"), ("a", "b", "c")])
    new = PlacementTable("ks", [("d", "b", "c"), ("a", "b", "c")])
    assert diff(old, new) == [
        ReplicaMove("ks", 0, MoveKind.ADD_REPLICA, "d"),
        ReplicaMove("ks", 0, MoveKind.TRANSFER_LEADER, "d", "a"),
        ReplicaMove("ks", 0, MoveKind.REMOVE_REPLICA, "a"),
    ]


def test_leader_only_change_and_no_change() -> None:
    old = PlacementTable("ks", [("a", "b", "c")])
    assert diff(old, old) == []
    new = PlacementTable("ks", [("b", "a", "c")])
    assert diff(old, new) == [ReplicaMove("ks", 0, MoveKind.TRANSFER_LEADER, "b", "a")]
    # Follower order alone is not a move.
    assert diff(old, PlacementTable("ks", [("a", "c", "b")])) == []


def test_first_placement_from_an_empty_table() -> None:
    new = PlacementTable("ks", [("a", "b")])
    assert diff(PlacementTable.empty("ks", 1), new) == [
        ReplicaMove("ks", 0, MoveKind.ADD_REPLICA, "a"),
        ReplicaMove("ks", 0, MoveKind.ADD_REPLICA, "b"),
        ReplicaMove("ks", 0, MoveKind.TRANSFER_LEADER, "a", None),
    ]


def test_a_partition_left_with_no_eligible_node_loses_every_replica() -> None:
    """The one case where the leader is removed: its only node left and every other node
    drains (hypothesis found it; the property test allows exactly this)."""
    nodes = [PlacementNode(f"n{i}", draining=True) for i in range(3)]
    spec = KeyspaceSpec("ks", 1, 1)
    old = PlacementTable("ks", [("n3",)])
    result = compute_placement(spec, nodes, old, strict=False)
    assert list(result.table.replicas) == [()] and result.violations
    assert diff(old, result.table) == [ReplicaMove("ks", 0, MoveKind.REMOVE_REPLICA, "n3")]


def test_mismatched_tables_are_refused() -> None:
    with pytest.raises(PlacementError, match="keyspace 'a' against 'b'"):
        diff(PlacementTable.empty("a", 1), PlacementTable.empty("b", 1))
    with pytest.raises(PlacementError, match="1 partitions against 2"):
        diff(PlacementTable.empty("a", 1), PlacementTable.empty("a", 2))


def test_stats_count_replicas_leaders_zones_and_imbalance() -> None:
    nodes = [
        PlacementNode("a", NodeLabels("z1", host="h1")),
        PlacementNode("b", NodeLabels("z2", host="h1")),
        PlacementNode("c", NodeLabels("z2", host="h1")),
        PlacementNode("idle", NodeLabels("z3")),
    ]
    table = PlacementTable("ks", [("a", "b"), ("a", "c"), ("b", "c"), ()])
    stats = placement_stats(table, nodes)
    assert stats.replicas_per_node == {"a": 2, "b": 2, "c": 2, "idle": 0}
    assert stats.leaders_per_node == {"a": 2, "b": 1, "c": 0, "idle": 0}
    assert stats.replicas_per_zone == {"z1": 2, "z2": 4}
    assert stats.zone_spread == {0: 1, 1: 1, 2: 2}
    assert stats.replica_count == {0: 1, 2: 3}
    assert (stats.max_replicas, stats.min_replicas) == (2, 0)
    assert stats.replica_imbalance == pytest.approx(2 / 1.5)
    assert stats.replica_min_ratio == 0.0
    assert stats.leader_imbalance == pytest.approx(2 / 0.75)
    assert stats.partitions_with_shared_host == 1  # b and c share z2/h1
    doc = stats.as_dict()
    assert doc["zone_spread"] == {"0": 1, "1": 1, "2": 2}


def test_stats_of_a_computed_table_are_balanced() -> None:
    nodes = [PlacementNode(f"n{i}", NodeLabels(f"z{i % 3}")) for i in range(9)]
    table = compute_placement(KeyspaceSpec("ks", 90, 3), nodes).table
    stats = placement_stats(table, nodes)
    assert stats.zone_spread == {3: 90}
    assert stats.replica_imbalance == 1.0
    assert stats.leader_imbalance == 1.0
    assert stats.replicas_per_zone == {"z0": 90, "z1": 90, "z2": 90}
