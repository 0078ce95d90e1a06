"""Cluster map and the meta state machine: epochs, validation, determinism."""

from __future__ import annotations

from collections import Counter

from atoll.metadata import (
    ClusterMap,
    MetaStateMachine,
    NodeRecord,
    NodeState,
    encode_meta_command,
)


def _nodes(n: int, zones: int = 3) -> list[NodeRecord]:
    return [
        NodeRecord(f"n{i}", f"127.0.0.1:{7400 + i}", zone=f"z{i % zones}", rack=f"r{i}")
        for i in range(1, n + 1)
    ]


def _boot(sm: MetaStateMachine, n: int = 3, partitions: int = 8) -> dict[str, object]:
    return sm.apply(
        encode_meta_command(
            "bootstrap",
            cluster_id="c1",
            nodes=_nodes(n),
            keyspaces=[{"name": "default", "partitions": partitions, "rf": 3}],
        )
    )


def test_bootstrap_creates_map_at_epoch_one_and_is_idempotent() -> None:
    sm = MetaStateMachine()
    assert _boot(sm) == {"ok": True, "epoch": 1}
    assert _boot(sm) == {"ok": True, "epoch": 1}  # every initial voter may propose it
    m = sm.map
    assert m.meta_voters == ("n1", "n2", "n3")
    ks = m.keyspace("default")
    assert ks.first_group == 1 and m.next_group == 9
    for p in range(8):
        rs = m.group_for("default", p)
        assert len(set(rs.replicas)) == 3
        assert len({m.nodes[r].zone for r in rs.replicas}) == 3  # zone-aware
    leaders = Counter(m.group_for("default", p).replicas[0] for p in range(8))
    assert max(leaders.values()) - min(leaders.values()) <= 1


def test_changes_bump_epoch_and_noops_do_not() -> None:
    sm = MetaStateMachine()
    _boot(sm, n=4)
    n4 = sm.map.nodes["n4"]
    assert sm.apply(encode_meta_command("register_node", node=n4))["epoch"] == 1
    r = sm.apply(encode_meta_command("register_node", node=NodeRecord("n9", "h:1", zone="z9")))
    assert r == {"ok": True, "epoch": 2}
    r = sm.apply(encode_meta_command("set_node_state", node_id="n9", state="draining"))
    assert r["epoch"] == 3 and sm.map.nodes["n9"].state is NodeState.DRAINING
    r = sm.apply(encode_meta_command("set_replicas", group_id=1, replicas=["n9", "n1", "n2"]))
    assert r["epoch"] == 4 and sm.map.groups[1].replicas == ("n9", "n1", "n2")


def test_bad_commands_are_results_not_crashes() -> None:
    sm = MetaStateMachine()
    _boot(sm)
    for data in (
        b"garbage",
        b"[]",
        encode_meta_command("frobnicate"),
        encode_meta_command("set_node_state", node_id="ghost", state="draining"),
        encode_meta_command("set_replicas", group_id=999, replicas=["n1"]),
        encode_meta_command("set_replicas", group_id=1, replicas=["n1", "n1"]),
        encode_meta_command("create_keyspace", keyspace={"name": "big", "rf": 5}),
        encode_meta_command("create_keyspace", keyspace={"name": "", "partitions": 1}),
    ):
        r = sm.apply(data)
        assert r["ok"] is False and r["error"], data
        assert r["epoch"] == 1
    assert sm.apply(encode_meta_command("create_keyspace", keyspace={"name": "b", "rf": 1}))["ok"]


def test_json_round_trip_and_replicas_replay_identically() -> None:
    a, b = MetaStateMachine(), MetaStateMachine()
    cmds = [
        encode_meta_command("bootstrap", cluster_id="c", nodes=_nodes(5)),
        encode_meta_command("create_keyspace", keyspace={"name": "k", "partitions": 16}),
        encode_meta_command("set_node_state", node_id="n2", state="draining"),
    ]
    for c in cmds:
        a.apply(c)
        b.apply(c)
    assert a.map == b.map
    assert ClusterMap.from_json(a.map.to_json()) == a.map
    assert a.map.groups_on("n1")
