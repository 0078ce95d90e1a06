"""Cluster benchmarks: 3 node processes on loopback, a separate load process.

Scenarios (issue #3 and #5 shapes; fsync on, 100-byte values, 10k keys):

* ``raft-1p``: one partition, writes only, concurrency 1, 64 and 256.
* ``raft-64p``: 64 partitions, writes only, concurrency 1, 64 and 256.
* ``mix-64p``: 64 partitions, 50% reads (linearizable) / 50% writes, concurrency 256.
* ``read-64p``: 64 partitions, linearizable reads only, concurrency 256.

Besides throughput and latency each run records CPU time per operation: the three node
processes together (from ``/proc/<pid>/stat``, over the whole measured run: start-up of
the load process included) and the load process during its workload (``cpu_s`` that
``atoll bench --json`` reports). On a machine where everything shares two cores, these say where a
ceiling comes from: ops/s can never exceed cores / (node + load CPU per op).

Each run starts a fresh cluster (``atoll.admin.DevCluster``: TCP + LMDB), waits until
every partition has a leader, then runs ``atoll bench`` in its own process and records
what it printed as JSON. Nothing is asserted: the figures are written to ``--json`` and
a Markdown table to ``--markdown``.

Usage: ``uv run python bench/bench_cluster.py [--quick] [--repeat N] [--event-loop L]
[--json F] [--markdown F]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import write_results  # bench/_report.py, beside this script

from atoll.admin import DevCluster

SCENARIOS: list[tuple[str, int, float, int, int, int, str | None]] = [
    # name, partitions, read fraction, concurrency, ops (full), ops (quick), storage
    # (None: --storage, LMDB by default, the embedded default)
    ("raft-1p", 1, 0.0, 1, 2000, 300, None),
    ("raft-1p", 1, 0.0, 64, 20000, 3000, None),
    ("raft-1p", 1, 0.0, 256, 40000, 5000, None),
    ("raft-64p", 64, 0.0, 1, 2000, 300, None),
    ("raft-64p", 64, 0.0, 64, 20000, 3000, None),
    ("raft-64p", 64, 0.0, 256, 40000, 5000, None),
    ("mix-64p", 64, 0.5, 256, 40000, 5000, None),
    # The same mix on RocksDB: an LSM engine writes the log and the applied state as
    # sequential appends, where LMDB's B-tree rewrites pages (docs/performance.md).
    ("mix-64p-rocksdb", 64, 0.5, 256, 40000, 5000, "rocksdb"),
    ("read-64p", 64, 1.0, 256, 40000, 5000, None),
]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[11], fields[12] are utime and stime (fields 14 and 15 of proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def calibrate() -> float:
    """CPU milliseconds of a fixed pure-Python workload (median of three): this
    machine's speed right now. It has slow and fast phases that last tens of minutes
    and move every figure by up to ~1.6x; compare runs by this column too."""
    times = []
    for _ in range(3):
        t = time.process_time()
        s = 0
        for i in range(200_000):
            s += len(str(i)) * (i & 7)
        times.append((time.process_time() - t) * 1000)
    return sorted(times)[1]


def free_base_port() -> int:
    """A base port with 3 free ports (and 3 more at +100 for telemetry)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + 110 > 65535:
            continue
        try:
            for p in (*range(base, base + 3), *range(base + 100, base + 103)):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


LOOP_ENV = "ATOLL_NODE_EVENT_LOOP"
"""The environment override of ``[node] event_loop`` (the nodes inherit the environment)."""
NATIVE_ENV = "ATOLL_NATIVE"
"""``0`` keeps the nodes and the load process on pure Python (see atoll.core.native)."""


def run_scenario(
    name: str,
    partitions: int,
    reads: float,
    conc: int,
    ops: int,
    storage: str,
    transport: str,
    event_loop: str = "auto",
    native: str = "auto",
) -> dict[str, Any]:
    """Start a fresh cluster, run one load process against it, stop the cluster.

    ``event_loop`` is the nodes' ``node.event_loop`` (through the environment they
    inherit) and the load process's ``--event-loop``. ``native``: ``auto`` runs the
    compiled modules if built (``python -m atoll.core.native build``), ``off`` runs pure
    Python (``ATOLL_NATIVE=0`` for the nodes and the load process).
    """
    with tempfile.TemporaryDirectory(prefix="atoll-bench-") as tmp:
        c = DevCluster(Path(tmp))
        descs = c.write_configs(
            3,
            base_port=free_base_port(),
            storage=storage,
            transport=transport,
            partitions=partitions,
            rf=3,
            sync=True,
        )
        env = {LOOP_ENV: event_loop, NATIVE_ENV: "0" if native == "off" else "1"}
        before = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            c.start(descs)
            try:
                statuses = c.wait_ready(120)
                run_result = _measure(c, ops, conc, reads, event_loop)
            finally:
                c.stop()
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    states = {state for st in statuses.values() for state in (st.get("native") or {}).values()}
    return {
        "scenario": name,
        "storage": storage,
        "partitions": partitions,
        "read_fraction": reads,
        "concurrency": conc,
        "native": "native" if states == {"native"} else "pure Python",
        **run_result,
    }


def _measure(c: DevCluster, ops: int, conc: int, reads: float, event_loop: str) -> dict[str, Any]:
    """A warm-up, then the measured run of one load process; its JSON plus CPU per op."""
    with tempfile.TemporaryDirectory(prefix="atoll-bench-out-") as tmp:
        out = Path(tmp) / "result.json"
        eps = ",".join(c.endpoints())
        cmd = [
            sys.executable,
            "-m",
            "atoll.admin",
            "bench",
            "-e",
            eps,
            "-n",
            str(ops),
            "-c",
            str(conc),
            "--reads",
            str(reads),
            "--event-loop",
            event_loop,
            "--json",
            str(out),
        ]
        # warm-up (connections, leases, page cache), then the measured run
        warm = [*cmd[:-2]]
        warm[warm.index("-n") + 1] = str(max(200, ops // 20))
        subprocess.run(warm, check=True, capture_output=True)
        pids = [int(n["pid"]) for n in (c.state() or {}).get("nodes", [])]
        nodes_before = sum(_cpu_seconds(p) for p in pids)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        nodes_cpu = sum(_cpu_seconds(p) for p in pids) - nodes_before
        result: dict[str, Any] = json.loads(out.read_text())
    load_cpu = float(result.get("cpu_s", 0.0))
    result["node_cpu_us_per_op"] = nodes_cpu / ops * 1e6
    result["load_cpu_us_per_op"] = load_cpu / ops * 1e6
    return result


def main() -> int:
    """Run the scenarios, print a table, write JSON and Markdown."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--quick", action="store_true", help="fewer operations per run")
    ap.add_argument("--only", help="run only scenarios whose name contains this")
    ap.add_argument("--storage", default="lmdb")
    ap.add_argument("--transport", default="tcp")
    ap.add_argument(
        "--event-loop",
        default="auto",
        choices=["auto", "uvloop", "asyncio"],
        help="the nodes' and the load process's event loop (default: uvloop if installed)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the scenarios this many times, round-robin (the machine has phases)",
    )
    ap.add_argument(
        "--native",
        default="auto",
        choices=["auto", "off"],
        help="auto: the compiled modules if built (nox -s bench builds them); off: pure Python",
    )
    args = ap.parse_args()
    rows = []
    chosen = [(i, sc) for i, sc in enumerate(SCENARIOS) if not args.only or args.only in sc[0]]
    for rnd, (order, (name, parts, reads, conc, ops_full, ops_quick, fixed)) in (
        (rnd, item) for rnd in range(max(1, args.repeat)) for item in chosen
    ):
        ops = ops_quick if args.quick else ops_full
        storage = fixed or args.storage
        print(
            f"{name}: {parts} partitions, {int(reads * 100)}% reads, c={conc}, {ops} ops,"
            f" {storage} ...",
            flush=True,
        )
        calib = calibrate()
        r = run_scenario(
            name,
            parts,
            reads,
            conc,
            ops,
            storage,
            args.transport,
            args.event_loop,
            args.native,
        )
        r["calib_ms"] = round(calib, 1)
        r["round"] = rnd + 1
        r["order"] = order
        rows.append(r)
        print(
            f"  [{r['native']}] {r['ops_per_s']:.0f} ops/s"
            f"  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
            f"  errors {r['errors']}  CPU/op: nodes {r['node_cpu_us_per_op']:.0f} us,"
            f" load {r['load_cpu_us_per_op']:.0f} us  (machine: {calib:.0f} ms calibration)",
            flush=True,
        )
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "storage": args.storage,
        "transport": args.transport,
        "event_loop": rows[0].get("event_loop", args.event_loop) if rows else args.event_loop,
        "native": sorted({r["native"] for r in rows}),
        "quick": args.quick,
        "repeat": max(1, args.repeat),
    }
    rows.sort(key=lambda r: (r["order"], r["round"]))
    write_results(
        args.json,
        args.markdown,
        meta=meta,
        rows=rows,
        title="Cluster benchmark",
        intro=(
            f"Generated by `nox -s bench` (`bench/bench_cluster.py`) on {meta['date']}; "
            f"{meta['machine']}; 3 node processes + 1 load process on the same machine; "
            f"{args.transport}, storage {args.storage} unless the column says otherwise, "
            "fsync on, 100-byte values, 10k keys; "
            'Raft log: `[raft] log_storage = "auto"` (a WAL of its own on LMDB, the '
            "engine's namespaces on RocksDB); "
            f"event loop: {meta['event_loop']} (nodes and load process); "
            f"Raft core: {' / '.join(meta['native'])} (column `core`; native = compiled "
            "with mypyc, `python -m atoll.core.native build`). "
            "CPU/op: CPU time of the three node processes together, and of the load "
            "process, divided by the operations of the measured run. Calibration: CPU ms "
            "of a fixed pure-Python loop just before the scenario (lower is a faster "
            "machine; this VM has slow and fast phases)."
        ),
        columns=[
            ("scenario", lambda r: r["scenario"]),
            ("storage", lambda r: r["storage"]),
            ("partitions", lambda r: r["partitions"]),
            ("reads", lambda r: f"{int(r['read_fraction'] * 100)}%"),
            ("concurrency", lambda r: r["concurrency"]),
            ("run", lambda r: f"{r['round']}/{meta['repeat']}"),
            ("core", lambda r: r["native"]),
            ("ops/s", lambda r: f"{r['ops_per_s']:.0f}"),
            ("p50 ms", lambda r: f"{r['p50_ms']:.2f}"),
            ("p99 ms", lambda r: f"{r['p99_ms']:.2f}"),
            ("errors", lambda r: r["errors"]),
            ("node CPU us/op", lambda r: f"{r['node_cpu_us_per_op']:.0f}"),
            ("load CPU us/op", lambda r: f"{r['load_cpu_us_per_op']:.0f}"),
            ("calibration ms", lambda r: f"{r['calib_ms']:.0f}"),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
