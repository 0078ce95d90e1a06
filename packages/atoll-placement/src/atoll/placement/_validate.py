"""Static validation of a keyspace spec and its placement rules.

Owns: every check that needs only the spec (not the nodes), each failure naming the rule
at fault (``rules.pins[2]``, ``rules.require[0]``) and what would have been accepted.
Never: looks at nodes or placement state; whether rules can be satisfied by the live
nodes is the engine's question (``_core.py``).
"""

from __future__ import annotations

from ._errors import PlacementRuleError
from ._model import KeyspaceSpec

__all__ = ["MAX_PARTITIONS", "MAX_RF", "validate_spec"]

MAX_PARTITIONS = 1 << 20
"""Upper bound on a keyspace's partition count (one Raft group each)."""

MAX_RF = 15
"""Upper bound on a replication factor (Raft groups past this size are impractical)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_spec(spec: KeyspaceSpec) -> None:
    """Raise :class:`PlacementRuleError` naming the first malformed field or rule.

    Checks the name, partition count and replication factor ranges, that selectors do not
    contradict each other (a label both required and forbidden), that every pin names a
    partition in range, at least one and at most ``rf`` distinct nodes (leader included), and
    that no partition is pinned twice or pinned to a forbidden node id.
    """
    if not isinstance(spec.name, str) or not spec.name:
        raise PlacementRuleError(f"keyspace name must be a non-empty string, got {spec.name!r}")
    where = f"keyspace {spec.name!r}"
    if not _is_int(spec.partitions) or not 1 <= spec.partitions <= MAX_PARTITIONS:
        raise PlacementRuleError(
            f"{where}: partitions must be an int in 1..{MAX_PARTITIONS}, got {spec.partitions!r}"
        )
    if not _is_int(spec.rf) or not 1 <= spec.rf <= MAX_RF:
        raise PlacementRuleError(f"{where}: rf must be an int in 1..{MAX_RF}, got {spec.rf!r}")
    rules = spec.rules

    for i, req in enumerate(rules.require):
        for j, forb in enumerate(rules.forbid):
            if req.key == forb.key and req.values <= forb.values:
                raise PlacementRuleError(
                    f"{where}: rules.require[{i}] ({req}) is entirely forbidden by "
                    f"rules.forbid[{j}] ({forb}); no node can match both"
                )
        if req.key == "node" and req.values <= rules.forbid_nodes:
            raise PlacementRuleError(
                f"{where}: rules.require[{i}] ({req}) names only nodes in rules.forbid_nodes"
            )
    for name in rules.forbid_nodes:
        if not isinstance(name, str) or not name:
            raise PlacementRuleError(
                f"{where}: rules.forbid_nodes holds {name!r}; node ids are non-empty strings"
            )

    pinned: dict[int, int] = {}
    for i, pin in enumerate(rules.pins):
        rule = f"{where}: rules.pins[{i}]"
        if not _is_int(pin.partition) or not 0 <= pin.partition < spec.partitions:
            raise PlacementRuleError(
                f"{rule}: partition {pin.partition!r} is out of range 0..{spec.partitions - 1}"
            )
        if pin.partition in pinned:
            raise PlacementRuleError(
                f"{rule}: partition {pin.partition} is already pinned by "
                f"rules.pins[{pinned[pin.partition]}]; merge the two pins"
            )
        pinned[pin.partition] = i
        if not pin.replicas and pin.leader is None:
            raise PlacementRuleError(f"{rule}: pins no replica and no leader")
        names = [*pin.replicas, *([pin.leader] if pin.leader is not None else [])]
        for name in names:
            if not isinstance(name, str) or not name:
                raise PlacementRuleError(f"{rule}: {name!r} is not a node id")
        if len(set(pin.replicas)) != len(pin.replicas):
            raise PlacementRuleError(f"{rule}: replicas {list(pin.replicas)} repeat a node")
        nodes = pin.nodes()
        if len(nodes) > spec.rf:
            raise PlacementRuleError(
                f"{rule}: pins {len(nodes)} nodes ({', '.join(nodes)}) but rf is {spec.rf}"
            )
        forbidden = sorted(set(nodes) & rules.forbid_nodes)
        if forbidden:
            raise PlacementRuleError(
                f"{rule}: pins {', '.join(forbidden)}, which rules.forbid_nodes forbids"
            )
