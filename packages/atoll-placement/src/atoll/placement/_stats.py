"""Operator-facing statistics of a placement table.

Owns: :class:`PlacementStats` and :func:`placement_stats` — replicas and leaders per node,
per-zone spread, and how far the busiest and idlest nodes are from their fair share.
Never: changes a table or decides placement; it only counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from ._model import PlacementNode, PlacementTable

__all__ = ["PlacementStats", "placement_stats"]


@attrs.frozen
class PlacementStats:
    """Counts and balance figures of one table (see :func:`placement_stats`).

    ``*_imbalance`` is the busiest node's count divided by its fair share (1.0 is
    perfect); ``*_min_ratio`` the idlest node's. Fair share is the weight-proportional
    part of the total among the nodes counted.
    """

    keyspace: str
    partitions: int
    replicas_per_node: Mapping[str, int]
    leaders_per_node: Mapping[str, int]
    replicas_per_zone: Mapping[str, int]
    zone_spread: Mapping[int, int]
    """Distinct zones per partition -> number of partitions with that many."""
    replica_count: Mapping[int, int]
    """Replicas per partition -> number of partitions with that many."""
    max_replicas: int
    min_replicas: int
    max_leaders: int
    min_leaders: int
    replica_imbalance: float
    replica_min_ratio: float
    leader_imbalance: float
    leader_min_ratio: float
    partitions_with_shared_host: int
    """Partitions with two replicas on one host (0 unless unavoidable)."""

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (for the admin API and reports)."""
        out = attrs.asdict(self)
        for key in ("zone_spread", "replica_count"):
            out[key] = {str(k): v for k, v in sorted(out[key].items())}
        return out


def _ratios(counts: Mapping[str, int], weights: Mapping[str, float]) -> tuple[float, float]:
    total = sum(counts.values())
    wsum = sum(weights[n] for n in counts)
    if not counts or total == 0 or wsum <= 0:
        return (0.0, 0.0)
    ratios = [counts[n] / (total * weights[n] / wsum) for n in counts]
    return (max(ratios), min(ratios))


def placement_stats(
    table: PlacementTable, nodes: Iterable[PlacementNode] | None = None
) -> PlacementStats:
    """Summarise ``table``; with ``nodes``, count them all (idle and draining too).

    Without ``nodes`` only nodes that appear in the table are counted, every weight is 1
    and zones are unknown (``replicas_per_zone`` is empty, ``zone_spread`` counts every
    partition under 0). Nodes in the table but not in ``nodes`` count with weight 1.
    """
    by_id = {n.node_id: n for n in nodes} if nodes is not None else {}
    counted = set(by_id) | table.node_ids()
    replicas = dict.fromkeys(sorted(counted), 0)
    leaders = dict.fromkeys(sorted(counted), 0)
    per_zone: dict[str, int] = {}
    spread: dict[int, int] = {}
    sizes: dict[int, int] = {}
    shared_host = 0
    for row in table.replicas:
        sizes[len(row)] = sizes.get(len(row), 0) + 1
        if row:
            leaders[row[0]] += 1
        zones: set[str] = set()
        hosts: set[str] = set()
        host_clash = False
        for node_id in row:
            replicas[node_id] += 1
            node = by_id.get(node_id)
            if node is not None:
                zone = node.labels.zone
                per_zone[zone] = per_zone.get(zone, 0) + 1
                zones.add(zone)
                if node.labels.host:
                    host = f"{zone}/{node.labels.rack}/{node.labels.host}"
                    host_clash = host_clash or host in hosts
                    hosts.add(host)
        shared_host += host_clash
        spread[len(zones)] = spread.get(len(zones), 0) + 1
    # Draining nodes are expected to hold nothing: leave them out of the fair share.
    active = {n for n in counted if not (n in by_id and by_id[n].draining)}
    weights = {n: (by_id[n].weight if n in by_id else 1.0) for n in counted}
    rep_active = {n: replicas[n] for n in active}
    lead_active = {n: leaders[n] for n in active}
    rep_max, rep_min = _ratios(rep_active, weights)
    lead_max, lead_min = _ratios(lead_active, weights)
    return PlacementStats(
        keyspace=table.keyspace,
        partitions=table.partitions,
        replicas_per_node=replicas,
        leaders_per_node=leaders,
        replicas_per_zone=dict(sorted(per_zone.items())),
        zone_spread=dict(sorted(spread.items())),
        replica_count=dict(sorted(sizes.items())),
        max_replicas=max(rep_active.values(), default=0),
        min_replicas=min(rep_active.values(), default=0),
        max_leaders=max(lead_active.values(), default=0),
        min_leaders=min(lead_active.values(), default=0),
        replica_imbalance=rep_max,
        replica_min_ratio=rep_min,
        leader_imbalance=lead_max,
        leader_min_ratio=lead_min,
        partitions_with_shared_host=shared_host,
    )
