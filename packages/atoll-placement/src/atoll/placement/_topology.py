"""The eligible nodes of one placement, indexed by failure domain.

Owns: mapping eligible nodes to small integers and to their zone/rack/host domains, the
diversity arithmetic on replica sets (the key of a candidate, the quality of a set, the
best key any candidate could reach) and each node's expected share of replicas.
Never: chooses replicas (``_core.py`` does), does IO, reads the clock or draws randoms.

Diversity, precisely. For a candidate node ``c`` and a partial replica set ``S`` the
*key* is ``(iso, host, zone, rack)``: how many members of ``S`` share ``c``'s
isolation-level domain, host, zone and rack. Lower is better, compared left to right, so
a new host always beats a shared one, then a new zone beats a used one, then a new rack.
The *quality* of a set is the sum of its members' keys when added one by one, which is
order-independent: the number of pairs of replicas sharing each kind of domain. Picking
the lowest key at every step is water-filling over a laminar family of domains and
reaches the lowest quality any set can have (a property test checks this against brute
force).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._model import IsolationLevel, PlacementNode

__all__ = ["Key", "Topology"]

Key = tuple[int, int, int, int]
"""(isolation-domain, host, zone, rack) collisions of a candidate with a partial set."""

ZERO_KEY: Key = (0, 0, 0, 0)


class Topology:
    """Eligible nodes as integers 0..n-1 (sorted by node id) with their domain indices."""

    def __init__(self, nodes: Sequence[PlacementNode], level: IsolationLevel) -> None:
        self.nodes: list[PlacementNode] = sorted(nodes, key=lambda n: n.node_id)
        self.ids: list[str] = [n.node_id for n in self.nodes]
        self.index: dict[str, int] = {nid: i for i, nid in enumerate(self.ids)}
        self.weight: list[float] = [float(n.weight) for n in self.nodes]
        self.level = level
        zones: dict[str, int] = {}
        racks: dict[tuple[str, str], int] = {}
        hosts: dict[tuple[str, str, str], int] = {}
        self.zone: list[int] = []
        self.rack: list[int] = []
        self.host: list[int] = []
        for n in self.nodes:
            lab = n.labels
            host_name = lab.host or f"\x00node:{n.node_id}"
            self.zone.append(zones.setdefault(lab.zone, len(zones)))
            self.rack.append(racks.setdefault((lab.zone, lab.rack), len(racks)))
            self.host.append(hosts.setdefault((lab.zone, lab.rack, host_name), len(hosts)))
        self.zone_names: list[str] = list(zones)
        self.rack_names: list[tuple[str, str]] = list(racks)
        self.host_names: list[tuple[str, str, str]] = [
            (z, r, "" if h.startswith("\x00node:") else h) for z, r, h in hosts
        ]
        self.zone_racks: list[list[int]] = [[] for _ in zones]
        self.rack_hosts: list[list[int]] = [[] for _ in racks]
        self.host_size: list[int] = [0] * len(hosts)
        self.host_nodes: list[list[int]] = [[] for _ in hosts]
        for i in range(len(self.nodes)):
            z, r, h = self.zone[i], self.rack[i], self.host[i]
            if r not in self.zone_racks[z]:
                self.zone_racks[z].append(r)
            if h not in self.rack_hosts[r]:
                self.rack_hosts[r].append(h)
            self.host_size[h] += 1
            self.host_nodes[h].append(i)
        if level is IsolationLevel.ZONE:
            self.iso: list[int] = self.zone
        elif level is IsolationLevel.RACK:
            self.iso = self.rack
        elif level is IsolationLevel.HOST:
            self.iso = self.host
        else:
            self.iso = list(range(len(self.nodes)))

    def __len__(self) -> int:
        return len(self.nodes)

    def domain_count(self) -> int:
        """How many distinct isolation-level domains the eligible nodes span."""
        return len(set(self.iso))

    def domain_name(self, i: int) -> str:
        """A readable name of node ``i``'s isolation-level domain."""
        if self.level is IsolationLevel.ZONE:
            return self.zone_names[self.zone[i]] or "(no zone)"
        if self.level is IsolationLevel.RACK:
            return "/".join(self.rack_names[self.rack[i]])
        if self.level is IsolationLevel.HOST:
            return "/".join(self.host_names[self.host[i]]) or self.ids[i]
        return self.ids[i]

    # -- diversity arithmetic ---------------------------------------------------------

    def _iso_of(self, hc: int, zc: int, rc: int) -> int:
        level = self.level
        if level is IsolationLevel.NODE:
            return 0
        if level is IsolationLevel.HOST:
            return hc
        if level is IsolationLevel.RACK:
            return rc
        return zc

    def key(self, c: int, chosen: Sequence[int]) -> Key:
        """The diversity key of adding node ``c`` to ``chosen`` (``c`` not in it)."""
        iso, h, z, r = self.iso[c], self.host[c], self.zone[c], self.rack[c]
        ic = hc = zc = rc = 0
        for s in chosen:
            if self.iso[s] == iso:
                ic += 1
            if self.host[s] == h:
                hc += 1
            if self.zone[s] == z:
                zc += 1
            if self.rack[s] == r:
                rc += 1
        return (ic, hc, zc, rc)

    def quality(self, members: Sequence[int]) -> Key:
        """Pairs of members sharing an isolation domain, a host, a zone, a rack."""
        ic = hc = zc = rc = 0
        for a in range(len(members)):
            x = members[a]
            for b in range(a):
                y = members[b]
                if self.iso[x] == self.iso[y]:
                    ic += 1
                if self.host[x] == self.host[y]:
                    hc += 1
                if self.zone[x] == self.zone[y]:
                    zc += 1
                if self.rack[x] == self.rack[y]:
                    rc += 1
        return (ic, hc, zc, rc)

    def best_key(self, chosen: Sequence[int]) -> Key | None:
        """The lowest key any eligible node outside ``chosen`` has; None if none is left.

        Reasons over domains instead of nodes, so it costs O(len(chosen)^2), not O(nodes):
        an untouched zone (or rack, or host) is as good as it gets within its parent.
        """
        if len(chosen) >= len(self.nodes):
            return None
        zc: dict[int, int] = {}
        rc: dict[int, int] = {}
        hc: dict[int, int] = {}
        for s in chosen:
            zc[self.zone[s]] = zc.get(self.zone[s], 0) + 1
            rc[self.rack[s]] = rc.get(self.rack[s], 0) + 1
            hc[self.host[s]] = hc.get(self.host[s], 0) + 1
        if len(self.zone_racks) > len(zc):
            return ZERO_KEY
        best: Key | None = None
        for z, zcount in zc.items():
            racks = self.zone_racks[z]
            used_racks = sum(1 for r in racks if r in rc)
            if len(racks) > used_racks:
                cand: Key = (self._iso_of(0, zcount, 0), 0, zcount, 0)
                if best is None or cand < best:
                    best = cand
                continue
            for r in racks:
                rcount = rc[r]
                hosts = self.rack_hosts[r]
                used_hosts = sum(1 for h in hosts if h in hc)
                if len(hosts) > used_hosts:
                    cand = (self._iso_of(0, zcount, rcount), 0, zcount, rcount)
                    if best is None or cand < best:
                        best = cand
                    continue
                for h in hosts:
                    hcount = hc[h]
                    if self.host_size[h] > hcount:
                        cand = (
                            self._iso_of(hcount, zcount, rcount),
                            hcount,
                            zcount,
                            rcount,
                        )
                        if best is None or cand < best:
                            best = cand
        return best

    def complete(self, chosen: Sequence[int], size: int) -> list[int]:
        """``chosen`` extended greedily (lowest key, then lowest index) to ``size`` nodes."""
        out = list(chosen)
        taken = set(out)
        while len(out) < size:
            want = self.best_key(out)
            if want is None:
                break
            for c in range(len(self.nodes)):
                if c not in taken and self.key(c, out) == want:
                    out.append(c)
                    taken.add(c)
                    break
            else:  # pragma: no cover - best_key promised a candidate
                raise AssertionError("best_key found no candidate")
        return out

    # -- expected load ----------------------------------------------------------------

    def expected_shares(self, replicas_per_partition: int) -> list[float]:
        """Each node's expected replicas per partition (they sum to the argument).

        Spreads top-down as the diversity rule does: at every level (zones, racks in a
        zone, hosts in a rack, nodes on a host) each child first gets an even base, capped
        by how many nodes it has, and the remainder goes to children in proportion to
        their weight, at most one more each. A node in a small zone thus expects more than
        a node in a large one, which is what zone spreading forces; balance is measured
        against this, not against a flat average.
        """
        shares = [0.0] * len(self.nodes)
        if not self.nodes:
            return shares
        zone_nodes: list[list[int]] = [[] for _ in self.zone_racks]
        for i in range(len(self.nodes)):
            zone_nodes[self.zone[i]].append(i)
        zone_amounts = _split(
            float(replicas_per_partition),
            [len(ns) for ns in zone_nodes],
            [sum(self.weight[i] for i in ns) for ns in zone_nodes],
        )
        for z, z_amount in enumerate(zone_amounts):
            racks = self.zone_racks[z]
            rack_nodes = [[i for i in zone_nodes[z] if self.rack[i] == r] for r in racks]
            rack_amounts = _split(
                z_amount,
                [len(ns) for ns in rack_nodes],
                [sum(self.weight[i] for i in ns) for ns in rack_nodes],
            )
            for r, r_amount in zip(racks, rack_amounts, strict=True):
                hosts = self.rack_hosts[r]
                host_amounts = _split(
                    r_amount,
                    [self.host_size[h] for h in hosts],
                    [sum(self.weight[i] for i in self.host_nodes[h]) for h in hosts],
                )
                for h, h_amount in zip(hosts, host_amounts, strict=True):
                    members = self.host_nodes[h]
                    node_amounts = _split(
                        h_amount, [1] * len(members), [self.weight[i] for i in members]
                    )
                    for i, amount in zip(members, node_amounts, strict=True):
                        shares[i] = amount
        return shares


def _split(amount: float, caps: list[int], weights: list[float]) -> list[float]:
    """Split a (fractional) per-partition replica count over children; see above.

    A fractional amount ``m + f`` means ``m`` replicas in a ``1 - f`` share of partitions
    and ``m + 1`` in the rest, so the split is that mixture of the two integer splits.
    """
    amount = min(amount, float(sum(caps)))
    whole = math.floor(amount + 1e-12)
    frac = amount - whole
    low = _split_int(whole, caps, weights)
    if frac <= 1e-12:
        return low
    high = _split_int(whole + 1, caps, weights)
    return [(1.0 - frac) * a + frac * b for a, b in zip(low, high, strict=True)]


def _split_int(m: int, caps: list[int], weights: list[float]) -> list[float]:
    base_level = 0
    top = max(caps, default=0)
    while base_level < top and sum(min(c, base_level + 1) for c in caps) <= m:
        base_level += 1
    base = [float(min(c, base_level)) for c in caps]
    rest = float(m) - sum(base)
    open_children = [i for i, c in enumerate(caps) if c > base_level]
    extra = _water_fill(rest, [weights[i] for i in open_children], 1.0)
    for i, e in zip(open_children, extra, strict=True):
        base[i] += e
    return base


def _water_fill(total: float, weights: list[float], cap: float) -> list[float]:
    """Split ``total`` in proportion to ``weights``, no share above ``cap``."""
    out = [0.0] * len(weights)
    active = list(range(len(weights)))
    remaining = total
    while active and remaining > 1e-12:
        wsum = sum(weights[i] for i in active)
        over = [i for i in active if remaining * weights[i] / wsum > cap]
        if not over:
            for i in active:
                out[i] = remaining * weights[i] / wsum
            break
        for i in over:
            out[i] = cap
            remaining -= cap
        active = [i for i in active if i not in over]
    return out
