"""A key-value workload through the public client: the demo and the benchmark driver.

Owns: generating a read/write mix over a key range at a fixed concurrency, measuring
each operation's latency, and summarising throughput and percentiles.
Never: asserts anything about speed; it reports what it measured.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import anyio
import attrs

from atoll.client import AtollClient
from atoll.core import AtollError

__all__ = ["WorkloadResult", "percentile", "run_workload"]


@attrs.define
class WorkloadResult:
    """What a workload run measured."""

    ops: int
    reads: int
    writes: int
    errors: int
    seconds: float
    latencies: list[float] = attrs.field(repr=False)
    read_latencies: list[float] = attrs.field(repr=False)
    write_latencies: list[float] = attrs.field(repr=False)
    cpu_seconds: float = 0.0
    """CPU time this process used during the run (all threads: the load generator's own
    cost, which on a shared machine competes with the nodes)."""

    @property
    def ops_per_second(self) -> float:
        """Completed operations per second."""
        return self.ops / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, float]:
        """Throughput and latency percentiles in milliseconds."""
        return {
            "ops": self.ops,
            "reads": self.reads,
            "writes": self.writes,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "ops_per_s": round(self.ops_per_second, 1),
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 3),
            "p99_ms": round(percentile(self.latencies, 99) * 1000, 3),
            "read_p50_ms": round(percentile(self.read_latencies, 50) * 1000, 3),
            "read_p99_ms": round(percentile(self.read_latencies, 99) * 1000, 3),
            "write_p50_ms": round(percentile(self.write_latencies, 50) * 1000, 3),
            "write_p99_ms": round(percentile(self.write_latencies, 99) * 1000, 3),
            "cpu_s": round(self.cpu_seconds, 3),
        }


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


async def run_workload(
    client: AtollClient,
    *,
    ops: int,
    concurrency: int,
    read_fraction: float = 0.5,
    keys: int = 10_000,
    value_size: int = 100,
    seed: int = 1,
    progress: Callable[[int], None] | None = None,
) -> WorkloadResult:
    """Run ``ops`` operations with ``concurrency`` workers and measure them."""
    rng = random.Random(seed)
    value = bytes(rng.getrandbits(8) for _ in range(value_size))
    lat: list[float] = []
    rlat: list[float] = []
    wlat: list[float] = []
    counts = {"issued": 0, "errors": 0, "unreported": 0}
    # Progress is reported in steps of about 1 % (a rich progress bar costs a few
    # microseconds per update, which a load process should not spend per operation).
    step = max(1, ops // 100)

    async def worker(wid: int) -> None:
        r = random.Random(seed * 1000 + wid)
        while counts["issued"] < ops:
            counts["issued"] += 1
            key = b"key-%08d" % r.randrange(keys)
            is_read = r.random() < read_fraction
            t0 = time.perf_counter()
            try:
                if is_read:
                    await client.get(key)
                else:
                    await client.put(key, value)
            except AtollError:
                counts["errors"] += 1
                continue
            dt = time.perf_counter() - t0
            lat.append(dt)
            (rlat if is_read else wlat).append(dt)
            if progress is not None:
                counts["unreported"] += 1
                if counts["unreported"] >= step:
                    progress(counts["unreported"])
                    counts["unreported"] = 0

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    async with anyio.create_task_group() as tg:
        for w in range(concurrency):
            tg.start_soon(worker, w)
    elapsed = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    if progress is not None and counts["unreported"]:
        progress(counts["unreported"])
    return WorkloadResult(
        len(lat), len(rlat), len(wlat), counts["errors"], elapsed, lat, rlat, wlat, cpu
    )
