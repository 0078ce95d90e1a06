"""Garbage-collector settings for long-running Atoll processes (nodes, load clients).

CPython's cyclic collector runs a young collection every 700 net container
allocations, and every tenth of those promotes survivors towards a full collection
that walks every tracked object. A node keeps many long-lived objects (modules,
the cluster map, log caches, sessions) and allocates a few dozen per request, so with
the defaults it spent about 8 % of its CPU in the collector under load, with full
collections pausing the event loop for 25-36 ms (measured, docs/performance.md).

Almost everything a request allocates is freed by reference counting, so the
collector has little to find. :func:`tune_gc` moves everything alive after start-up
into the permanent generation (``gc.freeze``: never scanned again) and raises the
young threshold, so collections are rare and only walk what was allocated since.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Net container allocations between young collections (CPython's default: 700)."""


def tune_gc(young: int = YOUNG_THRESHOLD) -> None:
    """Collect once, freeze what survives start-up, and make young collections rare.

    Call it once the process has imported and built what it keeps for its lifetime.
    Cyclic garbage is still collected, just in larger, rarer batches.
    """
    if young < 1:
        raise ValueError(f"young threshold must be >= 1, got {young}")
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
