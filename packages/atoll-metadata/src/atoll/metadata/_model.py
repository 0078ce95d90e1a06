"""The cluster map: nodes, keyspaces, partitions and their replica sets, at an epoch.

Owns: the immutable map data types, their JSON form, and the pure lookups clients and
nodes make on a map (which group owns a key, who the replicas are).
Never: changes a map in place (``_statemachine`` derives new maps) or does IO.

Every structural change produces a new map with ``epoch + 1``. The epoch rides on gossip
and on every request, so a node or client holding an older map learns it is stale.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import orjson

from atoll.core import converter

__all__ = [
    "META_GROUP_ID",
    "ClusterMap",
    "KeyspaceRecord",
    "NodeRecord",
    "NodeState",
    "ReplicaSet",
]

META_GROUP_ID = 0
"""The Raft group that replicates the cluster map itself."""


class NodeState(enum.StrEnum):
    """An operator-visible node state (liveness is membership's business, not the map's)."""

    ACTIVE = "active"
    DRAINING = "draining"
    """Receives no new replicas; the rebalancer moves its replicas away."""
    DECOMMISSIONED = "decommissioned"


@attrs.frozen
class NodeRecord:
    """A node as the cluster map knows it."""

    node_id: str
    address: str
    """Node-to-node transport address."""
    client_address: str = ""
    """Where clients connect (empty: the transport address)."""
    zone: str = ""
    rack: str = ""
    host: str = ""
    tags: dict[str, str] = attrs.field(factory=dict)
    state: NodeState = NodeState.ACTIVE

    @property
    def endpoint(self) -> str:
        """The address a client should use."""
        return self.client_address or self.address


@attrs.frozen
class KeyspaceRecord:
    """A keyspace: a fixed partition count chosen at creation, a replication factor."""

    name: str
    partitions: int
    rf: int
    first_group: int
    """Partition ``p`` of this keyspace is Raft group ``first_group + p``."""
    rules: dict[str, Any] = attrs.field(factory=dict)

    def group_of(self, partition: int) -> int:
        """The Raft group id of ``partition``."""
        return self.first_group + partition


@attrs.frozen
class ReplicaSet:
    """Which nodes replicate one partition; the first is the preferred leader."""

    group_id: int
    keyspace: str
    partition: int
    replicas: tuple[str, ...]
    learners: tuple[str, ...] = ()


@attrs.frozen
class ClusterMap:
    """One immutable version of the cluster's metadata."""

    cluster_id: str = ""
    epoch: int = 0
    nodes: dict[str, NodeRecord] = attrs.field(factory=dict)
    keyspaces: dict[str, KeyspaceRecord] = attrs.field(factory=dict)
    groups: dict[int, ReplicaSet] = attrs.field(factory=dict)
    meta_voters: tuple[str, ...] = ()
    next_group: int = META_GROUP_ID + 1

    def keyspace(self, name: str) -> KeyspaceRecord:
        """The keyspace ``name``; KeyError if it does not exist."""
        return self.keyspaces[name]

    def group_for(self, keyspace: str, partition: int) -> ReplicaSet:
        """The replica set of ``partition`` of ``keyspace``."""
        return self.groups[self.keyspaces[keyspace].group_of(partition)]

    def groups_on(self, node_id: str) -> list[ReplicaSet]:
        """Every replica set with a replica (voter or learner) on ``node_id``."""
        return [g for g in self.groups.values() if node_id in g.replicas or node_id in g.learners]

    def to_json(self) -> bytes:
        """Serialise (for the meta group's snapshot, and for clients)."""
        return orjson.dumps(converter.unstructure(self), option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> ClusterMap:
        """Inverse of :meth:`to_json`."""
        doc = orjson.loads(data)
        doc["groups"] = {int(k): v for k, v in doc.get("groups", {}).items()}
        return converter.structure(doc, cls)
