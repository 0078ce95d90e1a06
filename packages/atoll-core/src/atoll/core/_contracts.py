"""Data contracts shared across subsystems, as attrs classes with one cattrs converter.

Owns: the event payloads that hooks carry and the member description gossip spreads.
Never: holds behaviour beyond trivial helpers; a subsystem's own state stays in it.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import cattrs
from cattrs.preconf.orjson import make_converter

__all__ = [
    "ClusterMapChange",
    "LeaderChange",
    "MemberInfo",
    "MemberState",
    "MembershipEvent",
    "PartitionMove",
    "converter",
    "structure",
    "unstructure",
]


class MemberState(enum.StrEnum):
    """A member's state as membership sees it (SWIM's alive -> suspect -> dead, plus left)."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@attrs.frozen
class MemberInfo:
    """What the cluster knows about one node: identity, address, labels and liveness."""

    node_id: str
    address: str
    zone: str = ""
    rack: str = ""
    host: str = ""
    tags: dict[str, str] = attrs.field(factory=dict)
    version: str = ""
    """The node's software version."""
    meta_epoch: int = 0
    """The newest cluster-map epoch this node has applied (rides on gossip)."""
    incarnation: int = 0
    state: MemberState = MemberState.ALIVE


@attrs.frozen
class MembershipEvent:
    """A member joined, changed state, updated its metadata, left or was removed."""

    kind: str
    """One of "joined", "alive", "suspect", "dead", "left", "updated", "removed"."""
    member: MemberInfo


@attrs.frozen
class LeaderChange:
    """A Raft group has a new leader (or none: ``leader_id`` is None)."""

    group_id: int
    leader_id: str | None
    term: int


@attrs.frozen
class ClusterMapChange:
    """The cluster map moved to a new epoch."""

    epoch: int
    summary: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class PartitionMove:
    """A replica of a partition moved (or a move changed state)."""

    keyspace: str
    partition: int
    source: str | None
    target: str | None
    state: str
    """One of "planned", "copying", "catching_up", "switching", "done", "failed"."""


converter: cattrs.Converter = make_converter()
"""The one converter for Atoll contracts (JSON-safe unstructure/structure via orjson rules)."""


def unstructure(obj: Any) -> Any:
    """Turn a contract instance into JSON-safe builtins."""
    return converter.unstructure(obj)


def structure(data: Any, cls: type[Any]) -> Any:
    """Build a contract instance of ``cls`` from builtins (raises cattrs errors on bad data)."""
    return converter.structure(data, cls)
