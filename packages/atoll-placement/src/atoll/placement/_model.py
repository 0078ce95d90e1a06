"""The placement engine's data types: nodes and labels, rules, keyspaces, tables, moves.

Owns: the immutable (attrs frozen) values the engine consumes and produces, and the checks
a single value can make about itself (a weight is positive, a selector has values).
Never: places anything, reads the clock or does IO; cross-field checks that need the
keyspace (a pin's partition is in range) live in ``_validate.py``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from atoll.core import MemberInfo

from ._errors import PlacementError, PlacementRuleError

__all__ = [
    "DEFAULT_EPSILON",
    "RESERVED_LABELS",
    "IsolationLevel",
    "KeyspaceSpec",
    "LabelSelector",
    "MoveKind",
    "NodeLabels",
    "Pin",
    "PlacementNode",
    "PlacementResult",
    "PlacementRules",
    "PlacementTable",
    "PlacementViolation",
    "ReplicaMove",
    "ViolationKind",
]

DEFAULT_EPSILON = 0.25
"""Default bounded-load slack: no node holds more than ``ceil(expected * 1.25)`` replicas."""

RESERVED_LABELS = frozenset({"zone", "rack", "host", "node"})
"""Label keys with a fixed meaning; free-form ``tags`` may not use them."""


def _freeze_tags(tags: Mapping[str, str] | Iterable[tuple[str, str]]) -> Mapping[str, str]:
    items = dict(tags)
    for key, value in items.items():
        if not isinstance(key, str) or not key:
            raise PlacementError(f"tag keys must be non-empty strings, got {key!r}")
        if key in RESERVED_LABELS:
            raise PlacementError(
                f"tag {key!r} is reserved; set it as a label field, not a tag "
                f"(reserved: {', '.join(sorted(RESERVED_LABELS))})"
            )
        if not isinstance(value, str):
            raise PlacementError(f"tag {key!r} must have a string value, got {value!r}")
    return MappingProxyType(dict(sorted(items.items())))


@attrs.frozen
class NodeLabels:
    """Where a node sits in the failure-domain hierarchy, plus free-form tags.

    The hierarchy is zone > rack > host: a rack is named within its zone and a host within
    its rack. An empty ``zone`` or ``rack`` is one unnamed domain; an empty ``host`` means
    the node is its own host (no two unlabelled nodes are assumed to share a machine).
    """

    zone: str = ""
    rack: str = ""
    host: str = ""
    tags: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_tags, hash=False)

    def get(self, key: str, node_id: str = "") -> str | None:
        """The value of label ``key`` (``zone``, ``rack``, ``host``, ``node`` or a tag).

        ``node`` answers ``node_id``; an unset zone/rack/host answers ``""``; a missing tag
        answers None.
        """
        if key == "zone":
            return self.zone
        if key == "rack":
            return self.rack
        if key == "host":
            return self.host
        if key == "node":
            return node_id
        return self.tags.get(key)


def _check_weight(_inst: Any, _attr: Any, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlacementError(f"node weight must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise PlacementError(f"node weight must be finite and > 0, got {value!r}")


def _check_node_id(_inst: Any, _attr: Any, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise PlacementError(f"node_id must be a non-empty string, got {value!r}")


@attrs.frozen
class PlacementNode:
    """A live node as the placement engine sees it.

    ``weight`` is relative capacity: a node of weight 2 is expected to hold twice the
    replicas (and leaders) of a node of weight 1. A ``draining`` node receives no new
    replicas and loses the ones it has.
    """

    node_id: str = attrs.field(validator=_check_node_id)
    labels: NodeLabels = attrs.field(factory=NodeLabels)
    weight: float = attrs.field(default=1.0, validator=_check_weight)
    draining: bool = False

    @classmethod
    def from_member(
        cls, member: MemberInfo, *, weight: float = 1.0, draining: bool = False
    ) -> PlacementNode:
        """Build from the membership view of a node (zone, rack, host and tags).

        The caller decides which members are live; this does not look at ``state``.
        """
        labels = NodeLabels(zone=member.zone, rack=member.rack, host=member.host, tags=member.tags)
        return cls(member.node_id, labels, weight=weight, draining=draining)

    def label(self, key: str) -> str | None:
        """The value of label ``key``; see :meth:`NodeLabels.get`."""
        return self.labels.get(key, self.node_id)


def _to_frozenset(values: Iterable[str] | str) -> frozenset[str]:
    if isinstance(values, str):
        return frozenset((values,))
    return frozenset(values)


def _check_selector_key(_inst: Any, _attr: Any, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise PlacementRuleError(f"a label selector needs a non-empty key, got {value!r}")


def _check_selector_values(inst: Any, _attr: Any, value: frozenset[str]) -> None:
    if not value:
        raise PlacementRuleError(f"label selector on {inst.key!r} has no values")
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise PlacementRuleError(f"label selector on {inst.key!r} has non-string values {bad!r}")


@attrs.frozen
class LabelSelector:
    """Matches a node whose label ``key`` has one of ``values`` (``zone in {z1, z2}``).

    ``key`` is ``zone``, ``rack``, ``host``, ``node`` (the node id) or a tag name; a node
    without that tag never matches.
    """

    key: str = attrs.field(validator=_check_selector_key)
    values: frozenset[str] = attrs.field(converter=_to_frozenset, validator=_check_selector_values)

    def matches(self, node: PlacementNode) -> bool:
        """True when ``node`` carries this label with one of the values."""
        value = node.label(self.key)
        return value is not None and value in self.values

    def __str__(self) -> str:
        return f"{self.key} in {{{', '.join(sorted(self.values))}}}"


def _to_tuple(values: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(values, str):
        return (values,)
    return tuple(values)


@attrs.frozen
class Pin:
    """Pin replicas (and optionally the leader) of one partition to named nodes.

    ``replicas`` must hold a replica of ``partition``; ``leader``, when set, must lead it
    (and so also holds a replica). The remaining replicas are placed as usual.
    """

    partition: int
    replicas: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    leader: str | None = None

    def nodes(self) -> tuple[str, ...]:
        """Every pinned node, leader first, without repeats."""
        out: list[str] = [self.leader] if self.leader is not None else []
        out += [n for n in self.replicas if n not in out]
        return tuple(out)


class IsolationLevel(enum.StrEnum):
    """The failure-domain level at which two replicas of a partition may never meet.

    ``node`` (the default) only forbids two replicas on one node; ``host``, ``rack`` or
    ``zone`` make distinct hosts/racks/zones a hard requirement (TiKV's isolation-level).
    Above the hard level the engine still spreads replicas as widely as it can.
    """

    NODE = "node"
    HOST = "host"
    RACK = "rack"
    ZONE = "zone"


def _selectors(values: Iterable[LabelSelector]) -> tuple[LabelSelector, ...]:
    return tuple(values)


def _pins(values: Iterable[Pin]) -> tuple[Pin, ...]:
    return tuple(values)


def _isolation(value: IsolationLevel | str) -> IsolationLevel:
    try:
        return IsolationLevel(value)
    except ValueError:
        accepted = ", ".join(level.value for level in IsolationLevel)
        raise PlacementRuleError(
            f"rules.isolation_level: {value!r} is not one of {accepted}"
        ) from None


@attrs.frozen
class PlacementRules:
    """Constraints on where a keyspace's replicas may and should go.

    - ``require``: every replica's node must match every selector;
    - ``forbid``: no replica on a node matching any selector;
    - ``forbid_nodes``: no replica on these node ids;
    - ``pins``: per-partition replicas/leaders fixed to nodes;
    - ``prefer_leader``: leaders go to nodes matching the earliest selector possible
      (a preference: leaders still balance among equally preferred replicas);
    - ``isolation_level``: see :class:`IsolationLevel`.
    """

    require: tuple[LabelSelector, ...] = attrs.field(default=(), converter=_selectors)
    forbid: tuple[LabelSelector, ...] = attrs.field(default=(), converter=_selectors)
    forbid_nodes: frozenset[str] = attrs.field(default=frozenset(), converter=_to_frozenset)
    pins: tuple[Pin, ...] = attrs.field(default=(), converter=_pins)
    prefer_leader: tuple[LabelSelector, ...] = attrs.field(default=(), converter=_selectors)
    isolation_level: IsolationLevel = attrs.field(default=IsolationLevel.NODE, converter=_isolation)


@attrs.frozen
class KeyspaceSpec:
    """What placement needs to know about a keyspace: name, partition count, rf, rules."""

    name: str
    partitions: int = 64
    rf: int = 3
    rules: PlacementRules = attrs.field(factory=PlacementRules)


def _rows(rows: Iterable[Iterable[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(row) for row in rows)


@attrs.frozen
class PlacementTable:
    """partition -> replica node ids, leader (preferred leader) first.

    ``replicas[p]`` is the replica set of partition ``p``; its first node is the node that
    should lead the partition's Raft group.
    """

    keyspace: str
    replicas: tuple[tuple[str, ...], ...] = attrs.field(converter=_rows)

    @property
    def partitions(self) -> int:
        """The number of partitions."""
        return len(self.replicas)

    def replicas_of(self, partition: int) -> tuple[str, ...]:
        """The replica set of ``partition``, leader first."""
        return self.replicas[partition]

    def leader_of(self, partition: int) -> str | None:
        """The preferred leader of ``partition`` (None if it has no replicas)."""
        row = self.replicas[partition]
        return row[0] if row else None

    def partitions_of(self, node_id: str) -> list[int]:
        """The partitions with a replica on ``node_id``, ascending."""
        return [p for p, row in enumerate(self.replicas) if node_id in row]

    def node_ids(self) -> set[str]:
        """Every node holding at least one replica."""
        return {n for row in self.replicas for n in row}

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return iter(self.replicas)

    @classmethod
    def empty(cls, keyspace: str, partitions: int) -> PlacementTable:
        """A table with no replicas at all (the "before" of a keyspace's first placement)."""
        return cls(keyspace, ((),) * partitions)


class ViolationKind(enum.StrEnum):
    """Why a best-effort (``strict=False``) placement falls short of its spec."""

    UNDER_REPLICATED = "under_replicated"
    """Fewer eligible nodes than rf: partitions have fewer replicas than asked."""
    ISOLATION = "isolation"
    """Two replicas share a domain the isolation level forbids."""
    PIN_UNSATISFIED = "pin_unsatisfied"
    """A pinned node is unknown, draining or excluded by another rule."""


@attrs.frozen
class PlacementViolation:
    """One way a best-effort placement breaks its spec, and where."""

    kind: ViolationKind
    message: str
    partitions: tuple[int, ...] = ()
    node_id: str | None = None


@attrs.frozen
class PlacementResult:
    """A computed table and, when ``strict=False``, what it could not honour."""

    table: PlacementTable
    violations: tuple[PlacementViolation, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the table satisfies every rule and the replication factor."""
        return not self.violations


class MoveKind(enum.StrEnum):
    """One step of a rebalance: add a replica, move leadership, remove a replica."""

    ADD_REPLICA = "add_replica"
    TRANSFER_LEADER = "transfer_leader"
    REMOVE_REPLICA = "remove_replica"


@attrs.frozen
class ReplicaMove:
    """One step the rebalancer executes to turn an old table into a new one.

    For ``ADD_REPLICA``/``REMOVE_REPLICA`` ``node_id`` is the replica's node; for
    ``TRANSFER_LEADER`` it is the new leader and ``from_node`` the old one (None when the
    partition had no leader).
    """

    keyspace: str
    partition: int
    kind: MoveKind
    node_id: str
    from_node: str | None = None
