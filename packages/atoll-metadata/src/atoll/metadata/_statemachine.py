"""The meta group's state machine: applies metadata commands to the cluster map.

Owns: the metadata commands (bootstrap, register a node, change a node's state, create
a keyspace, set a partition's replicas), their validation, and epoch bumps.
Never: performs IO, reads the clock, or decides placement itself — a placer function is
injected so the placement engine stays swappable (DESIGN.md section 4).

Apply is deterministic: every replica of the meta group applies the same commands to the
same map and gets the same next map. A command that is invalid against the current map
is not an exception: it yields ``{"ok": false, "error": ...}`` so a bad request can never
stop the meta group from applying later entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import orjson

from atoll.core import InvalidRequest, converter
from atoll.placement import (
    KeyspaceSpec,
    NodeLabels,
    PlacementError,
    PlacementNode,
    compute_placement,
)

from ._model import ClusterMap, KeyspaceRecord, NodeRecord, NodeState, ReplicaSet

__all__ = [
    "MetaStateMachine",
    "Placer",
    "encode_meta_command",
    "engine_placer",
    "simple_placer",
]

Placer = Callable[[ClusterMap, KeyspaceRecord], dict[int, tuple[str, ...]]]
"""``placer(map, keyspace) -> {partition: replicas}`` (preferred leader first).

The default is :func:`engine_placer` (atoll-placement); :func:`simple_placer` is a
dependency-free fallback used by tests that want a fixed, obvious layout."""


def simple_placer(cmap: ClusterMap, ks: KeyspaceRecord) -> dict[int, tuple[str, ...]]:
    """A deterministic zone/rack-aware spread: for each partition, walk the active nodes in
    an order rotated by the partition number and take nodes from unused zones, then unused
    racks, then any. Leaders rotate with the partition, so they are balanced too.
    """
    nodes = sorted(
        (n for n in cmap.nodes.values() if n.state is NodeState.ACTIVE), key=lambda n: n.node_id
    )
    if len(nodes) < ks.rf:
        raise InvalidRequest(
            f"keyspace {ks.name!r} needs {ks.rf} replicas but only {len(nodes)} nodes are active"
        )
    out: dict[int, tuple[str, ...]] = {}
    for p in range(ks.partitions):
        order = nodes[p % len(nodes) :] + nodes[: p % len(nodes)]
        chosen: list[NodeRecord] = []
        for level in ("zone", "rack", None):
            for n in order:
                if len(chosen) == ks.rf:
                    break
                if n in chosen:
                    continue
                if level and getattr(n, level) in {getattr(c, level) for c in chosen}:
                    continue
                chosen.append(n)
        out[p] = tuple(n.node_id for n in chosen)
    return out


def engine_placer(cmap: ClusterMap, ks: KeyspaceRecord) -> dict[int, tuple[str, ...]]:
    """Place a keyspace with atoll-placement's engine: failure-domain spread (zone, rack,
    host), bounded load, balanced preferred leaders. Draining nodes get nothing;
    decommissioned nodes are left out. Deterministic (hashing, no randomness)."""
    nodes = [
        PlacementNode(
            n.node_id,
            NodeLabels(zone=n.zone, rack=n.rack, host=n.host, tags=n.tags),
            draining=n.state is NodeState.DRAINING,
        )
        for n in sorted(cmap.nodes.values(), key=lambda n: n.node_id)
        if n.state is not NodeState.DECOMMISSIONED
    ]
    spec = KeyspaceSpec(ks.name, ks.partitions, ks.rf)
    try:
        table = compute_placement(spec, nodes).table
    except PlacementError as exc:
        raise InvalidRequest(f"keyspace {ks.name!r}: {exc}") from exc
    return {p: table.replicas_of(p) for p in range(ks.partitions)}


def encode_meta_command(op: str, **fields: Any) -> bytes:
    """Encode a metadata command for proposal to the meta group."""
    return orjson.dumps({"op": op, **converter.unstructure(fields)})


class MetaStateMachine:
    """Holds the current :class:`ClusterMap` and applies committed metadata commands."""

    def __init__(self, placer: Placer | None = None, cmap: ClusterMap | None = None) -> None:
        placer = placer or engine_placer
        self.placer = placer
        self.map = cmap or ClusterMap()

    def apply(self, data: bytes) -> dict[str, Any]:
        """Apply one committed command; returns ``{"ok": True, "epoch": n}`` or an error."""
        try:
            doc = orjson.loads(data)
            if not isinstance(doc, dict) or not isinstance(doc.get("op"), str):
                raise InvalidRequest("metadata command is not an object with an 'op'")
            handler = getattr(self, f"_op_{doc['op']}", None)
            if handler is None:
                raise InvalidRequest(f"unknown metadata command {doc['op']!r}")
            new = handler(doc)
        except (InvalidRequest, KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            return {"ok": False, "error": str(exc), "epoch": self.map.epoch}
        if new is not self.map:
            self.map = attrs.evolve(new, epoch=self.map.epoch + 1)
        return {"ok": True, "epoch": self.map.epoch}

    # ------------------------------------------------------------------ commands

    def _op_bootstrap(self, doc: dict[str, Any]) -> ClusterMap:
        if self.map.epoch:
            if self.map.cluster_id == doc["cluster_id"]:
                return self.map  # idempotent: every initial voter may propose it
            raise InvalidRequest(f"cluster already bootstrapped as {self.map.cluster_id!r}")
        nodes = [converter.structure(n, NodeRecord) for n in doc["nodes"]]
        cmap = ClusterMap(
            cluster_id=doc["cluster_id"],
            nodes={n.node_id: n for n in nodes},
            meta_voters=tuple(n.node_id for n in nodes),
        )
        for ks in doc.get("keyspaces", []):
            cmap = self._create_keyspace(cmap, ks)
        return cmap

    def _op_register_node(self, doc: dict[str, Any]) -> ClusterMap:
        node = converter.structure(doc["node"], NodeRecord)
        old = self.map.nodes.get(node.node_id)
        if old is not None:
            node = attrs.evolve(node, state=old.state)
            if old == node:
                return self.map
        return attrs.evolve(self.map, nodes={**self.map.nodes, node.node_id: node})

    def _op_set_node_state(self, doc: dict[str, Any]) -> ClusterMap:
        node = self.map.nodes.get(doc["node_id"])
        if node is None:
            raise InvalidRequest(f"node {doc['node_id']!r} is not in the cluster map")
        state = NodeState(doc["state"])
        if node.state is state:
            return self.map
        nodes = {**self.map.nodes, node.node_id: attrs.evolve(node, state=state)}
        return attrs.evolve(self.map, nodes=nodes)

    def _op_create_keyspace(self, doc: dict[str, Any]) -> ClusterMap:
        return self._create_keyspace(self.map, doc["keyspace"])

    def _op_set_replicas(self, doc: dict[str, Any]) -> ClusterMap:
        gid = int(doc["group_id"])
        rs = self.map.groups.get(gid)
        if rs is None:
            raise InvalidRequest(f"group {gid} does not exist")
        replicas = tuple(doc["replicas"])
        learners = tuple(doc.get("learners", ()))
        unknown = [n for n in (*replicas, *learners) if n not in self.map.nodes]
        if unknown or not replicas or len(set(replicas)) != len(replicas):
            raise InvalidRequest(f"group {gid}: invalid replicas {replicas} (unknown: {unknown})")
        new = attrs.evolve(rs, replicas=replicas, learners=learners)
        if new == rs:
            return self.map
        return attrs.evolve(self.map, groups={**self.map.groups, gid: new})

    def _create_keyspace(self, cmap: ClusterMap, spec: dict[str, Any]) -> ClusterMap:
        name = spec["name"]
        partitions = int(spec.get("partitions", 64))
        rf = int(spec.get("rf", 3))
        if not isinstance(name, str) or not name or len(name) > 64:
            raise InvalidRequest(f"keyspace name {name!r} must be 1-64 characters")
        if name in cmap.keyspaces:
            existing = cmap.keyspaces[name]
            if (existing.partitions, existing.rf) == (partitions, rf):
                return cmap
            raise InvalidRequest(f"keyspace {name!r} already exists with other settings")
        if not 1 <= partitions <= 65536 or not 1 <= rf <= 7:
            raise InvalidRequest(
                f"keyspace {name!r}: partitions must be 1-65536 and rf 1-7 "
                f"(got {partitions} and {rf})"
            )
        ks = KeyspaceRecord(name, partitions, rf, cmap.next_group, dict(spec.get("rules", {})))
        placement = self.placer(cmap, ks)
        groups = dict(cmap.groups)
        for p in range(partitions):
            gid = ks.group_of(p)
            groups[gid] = ReplicaSet(gid, name, p, placement[p])
        return attrs.evolve(
            cmap,
            keyspaces={**cmap.keyspaces, name: ks},
            groups=groups,
            next_group=cmap.next_group + partitions,
        )
