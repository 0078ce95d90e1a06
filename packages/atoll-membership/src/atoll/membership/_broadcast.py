"""The transmit-limited broadcast queue behind infection-style dissemination.

Owns: pending updates, how often each has been piggybacked, and which to send next
(hashicorp/memberlist ``TransmitLimitedQueue``): the least-transmitted first, newest
first among equals, each dropped after ``retransmit_mult * ceil(log10(n + 1))``
transmissions. A newer update about a node replaces the queued one, so the queue never
holds two updates about the same member.
Never: sends anything, reads the clock, or interprets updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from ._messages import Update

__all__ = ["BroadcastQueue", "retransmit_limit"]


def retransmit_limit(mult: int, cluster_size: int) -> int:
    """How many times an update is piggybacked: ``mult * ceil(log10(n + 1))``."""
    return mult * math.ceil(math.log10(cluster_size + 1))


@attrs.define(slots=True, eq=False)
class _Item:
    update: Update
    order: int
    transmits: int = 0
    on_done: Callable[[], None] | None = None


class BroadcastQueue:
    """Updates waiting to be piggybacked, bucketed by transmit count.

    :param retransmit_mult: memberlist's ``RetransmitMult`` (4 on a LAN).
    :param max_depth: a hard cap; beyond it the most-transmitted items are dropped
        (anti-entropy push-pull repairs whatever that loses).
    """

    def __init__(self, retransmit_mult: int, max_depth: int = 4096) -> None:
        self.retransmit_mult = retransmit_mult
        self.max_depth = max_depth
        self._by_node: dict[str, _Item] = {}
        self._buckets: dict[int, dict[str, _Item]] = {}
        self._order = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._by_node)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_node

    def pending(self, node_id: str) -> Update | None:
        """The queued update about ``node_id``, if any."""
        item = self._by_node.get(node_id)
        return item.update if item else None

    def _unlink(self, item: _Item) -> None:
        bucket = self._buckets[item.transmits]
        del bucket[item.update.node_id]
        if not bucket:
            del self._buckets[item.transmits]
        del self._by_node[item.update.node_id]

    def _link(self, item: _Item) -> None:
        self._by_node[item.update.node_id] = item
        self._buckets.setdefault(item.transmits, {})[item.update.node_id] = item

    def push(self, update: Update, on_done: Callable[[], None] | None = None) -> None:
        """Queue ``update``, replacing (invalidating) any queued update about the same node.

        ``on_done`` runs when the update has been transmitted its full number of times
        (or replaced): how a graceful leave knows it was spread.
        """
        old = self._by_node.get(update.node_id)
        if old is not None:
            self._unlink(old)
            if old.on_done is not None:
                old.on_done()
        self._order += 1
        self._link(_Item(update, self._order, 0, on_done))
        if len(self._by_node) > self.max_depth:
            self._prune()

    def _prune(self) -> None:
        while len(self._by_node) > self.max_depth:
            worst = max(self._buckets)
            bucket = self._buckets[worst]
            oldest = min(bucket.values(), key=lambda i: i.order)
            self._unlink(oldest)
            self.dropped += 1
            if oldest.on_done is not None:
                oldest.on_done()

    def take(self, budget: int, cluster_size: int, min_size: int = 16) -> list[Update]:
        """Updates that fit in ``budget`` bytes, least-transmitted (then newest) first.

        Each returned update counts one transmission; those at the retransmit limit leave
        the queue.
        """
        if not self._by_node or budget < min_size:
            return []
        limit = retransmit_limit(self.retransmit_mult, cluster_size)
        out: list[_Item] = []
        remaining = budget
        for transmits in sorted(self._buckets):
            bucket = self._buckets[transmits]
            for item in sorted(bucket.values(), key=lambda i: -i.order):
                cost = item.update.size + 1
                if cost <= remaining:
                    out.append(item)
                    remaining -= cost
                    if remaining < min_size:
                        break
            if remaining < min_size:
                break
        for item in out:
            self._unlink(item)
            item.transmits += 1
            if item.transmits >= limit:
                if item.on_done is not None:
                    item.on_done()
            else:
                self._link(item)
        return [i.update for i in out]
