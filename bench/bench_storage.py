"""Storage engine micro-benchmarks: memory, LMDB and RocksDB through the Atoll contract.

Owns: measuring each backend's single-put rate with and without sync, synced batches of
100, point gets and scans (100-byte values, random 16-byte keys) in a temporary
directory, and reporting them as a table, JSON and Markdown.
Never: asserts anything about speed (figures vary +-30% run to run on a shared box).

Usage::

    uv run python bench/bench_storage.py                  # full run
    uv run python bench/bench_storage.py --quick          # a few seconds, for CI smoke
    uv run python bench/bench_storage.py --json out.json --markdown out.md

Engines are opened the way a node opens them (plugin manager + ``open_storage``). The
"nosync" figures use an engine opened with ``[storage] sync = false`` and
``write(sync=False)``: LMDB cannot skip fsync per transaction, so with ``sync = true``
every LMDB commit fsyncs.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from atoll.core import (
    StorageConfig,
    StorageEngine,
    WriteBatch,
    make_plugin_manager,
    open_storage,
)

BACKENDS = {
    "memory": "atoll.storage.memory._plugin",
    "lmdb": "atoll.storage.lmdb._plugin",
    "rocksdb": "atoll.storage.rocksdb._plugin",
}
NS = "bench"
VALUE_BYTES = 100
KEY_BYTES = 16
BATCH = 100

METRICS = [
    ("put_sync_ops_s", "put, sync (ops/s)"),
    ("put_nosync_ops_s", "put, no sync (ops/s)"),
    ("batch100_sync_keys_s", "batch of 100, sync (keys/s)"),
    ("get_ops_s", "point get (ops/s)"),
    ("scan_keys_s", "scan (keys/s)"),
]


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"put_sync": 200, "put_nosync": 2_000, "batches": 20, "gets": 5_000}
    return {"put_sync": 2_000, "put_nosync": 30_000, "batches": 300, "gets": 100_000}


def _open(backend: str, data_dir: Path, *, sync: bool) -> StorageEngine:
    pm = make_plugin_manager([importlib.import_module(BACKENDS[backend])], load_entry_points=False)
    config = StorageConfig(backend=backend, sync=sync, map_size_mb=4096)
    engine = open_storage(pm, config, str(data_dir))
    engine.create_namespace(NS)
    return engine


def _rate(count: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    return count / elapsed if elapsed > 0 else float("inf")


def bench_backend(backend: str, root: Path, quick: bool, seed: int) -> dict[str, float]:
    """Run every measurement for ``backend`` under ``root``; return metric -> rate."""
    rng = random.Random(seed)
    n = _sizes(quick)
    value = bytes(rng.getrandbits(8) for _ in range(VALUE_BYTES))

    def keys(count: int) -> list[bytes]:
        return [rng.randbytes(KEY_BYTES) for _ in range(count)]

    out: dict[str, float] = {}

    # Unsynced engine first: single puts without sync.
    engine = _open(backend, root / f"{backend}-nosync", sync=False)
    try:
        ks = keys(n["put_nosync"])

        def put_nosync() -> None:
            for k in ks:
                engine.write(WriteBatch().put(NS, k, value), sync=False)

        out["put_nosync_ops_s"] = _rate(len(ks), put_nosync)
    finally:
        engine.close()

    engine = _open(backend, root / f"{backend}-sync", sync=True)
    try:
        ks = keys(n["put_sync"])

        def put_sync() -> None:
            for k in ks:
                engine.write(WriteBatch().put(NS, k, value), sync=True)

        out["put_sync_ops_s"] = _rate(len(ks), put_sync)
        loaded = list(ks)

        batches = [keys(BATCH) for _ in range(n["batches"])]

        def batch_sync() -> None:
            for group in batches:
                batch = WriteBatch()
                for k in group:
                    batch.put(NS, k, value)
                engine.write(batch, sync=True)

        out["batch100_sync_keys_s"] = _rate(BATCH * len(batches), batch_sync)
        for group in batches:
            loaded.extend(group)

        probes = [rng.choice(loaded) for _ in range(n["gets"])]

        def gets() -> None:
            get = engine.get
            for k in probes:
                if get(NS, k) is None:
                    raise AssertionError(f"{backend}: a written key is missing")

        out["get_ops_s"] = _rate(len(probes), gets)

        scanned = 0

        def scan() -> None:
            nonlocal scanned
            for _ in range(3):
                scanned += sum(1 for _ in engine.scan(NS))

        rate = _rate(1, scan)
        out["scan_keys_s"] = rate * scanned
        if scanned != 3 * len(set(loaded)):
            raise AssertionError(f"{backend}: scan saw {scanned // 3} of {len(set(loaded))}")
    finally:
        engine.close()
    return out


RAFT_GROUPS = 64
RAFT_ENTRIES = 2
RAFT_ENTRY_BYTES = 150


def _raft_cycles(engine: Any, logs: list[Any], cycles: int) -> None:
    from atoll.replication import Entry, EntryKind, HardState

    data = b"x" * RAFT_ENTRY_BYTES
    for c in range(cycles):
        batch = WriteBatch()
        first = c * RAFT_ENTRIES + 1
        entries = tuple(Entry(first + i, 1, data, EntryKind.NORMAL) for i in range(RAFT_ENTRIES))
        for log in logs:
            log.stage(batch, hard_state=HardState(1, "n1", first), entries=entries, snapshot=None)
        engine.write(batch, sync=True)
        for log in logs:
            log.commit_staged()


def bench_raft_log(root: Path, quick: bool) -> dict[str, float]:
    """Synced Raft cycles per second: each persists two 150-byte entries and a hard state
    for each of 64 groups (the 64-partition mix's shape) through ``EngineLogStorage``,
    with the log in LMDB, in RocksDB, or in the Raft WAL next to LMDB."""
    from atoll.replication import EngineLogStorage, WalEngine

    cycles = 100 if quick else 1000
    out: dict[str, float] = {}
    for label, backend, wal in (
        ("lmdb", "lmdb", False),
        ("rocksdb", "rocksdb", False),
        ("lmdb + raft WAL", "lmdb", True),
    ):
        where = root / f"raftlog-{backend}-{int(wal)}"
        inner = _open(backend, where, sync=True)
        engine: Any = WalEngine(inner, str(where / "raftwal")) if wal else inner
        try:
            logs = [EngineLogStorage(engine, g) for g in range(1, RAFT_GROUPS + 1)]
            out[label] = _rate(cycles, functools.partial(_raft_cycles, engine, logs, cycles))
        finally:
            engine.close()
    return out


def fsync_baseline(root: Path, count: int) -> float:
    """fdatasync of 4 KiB appends per second on ``root``: the disk's ceiling right now."""
    path = root / "fsync-baseline"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        block = b"\0" * 4096

        def run() -> None:
            for _ in range(count):
                os.write(fd, block)
                os.fdatasync(fd)

        return _rate(count, run)
    finally:
        os.close(fd)
        path.unlink()


def _pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "lmdb": _pkg_version("lmdb"),
        "rocksdict": _pkg_version("rocksdict"),
        "value_bytes": VALUE_BYTES,
        "key_bytes": KEY_BYTES,
    }


def _fmt(x: float) -> str:
    return f"{x:,.0f}"


def markdown(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per metric, one column per backend."""
    names = list(results)
    lines = [
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, label in METRICS:
        row = [_fmt(results[b][key]) for b in names]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def text_table(results: dict[str, dict[str, float]]) -> str:
    """A plain fixed-width table for the terminal."""
    names = list(results)
    width = max(len(label) for _, label in METRICS)
    head = f"{'':<{width}}  " + "  ".join(f"{b:>12}" for b in names)
    rows = [head, "-" * len(head)]
    for key, label in METRICS:
        rows.append(
            f"{label:<{width}}  " + "  ".join(f"{_fmt(results[b][key]):>12}" for b in names)
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmarks, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write a Markdown table here")
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument(
        "--backend",
        action="append",
        choices=sorted(BACKENDS),
        help="benchmark only this backend (repeatable; default: all)",
    )
    parser.add_argument("--dir", type=Path, help="directory for the temporary databases")
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args(argv)

    backends = args.backend or list(BACKENDS)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="atoll-bench-", dir=args.dir) as tmp:
        fsyncs = fsync_baseline(Path(tmp), 200 if args.quick else 1000)
        for backend in backends:
            print(f"benchmarking {backend} ...", file=sys.stderr, flush=True)
            results[backend] = bench_backend(backend, Path(tmp), args.quick, args.seed)
        raft = {}
        if {"lmdb", "rocksdb"} <= set(backends):
            print("benchmarking Raft log cycles ...", file=sys.stderr, flush=True)
            raft = bench_raft_log(Path(tmp), args.quick)
    print(text_table(results))
    for label, rate in raft.items():
        print(f"raft cycle (64 groups x 2 entries + hard state, synced), {label}: {_fmt(rate)}/s")
    print(f"disk baseline: {_fmt(fsyncs)} fdatasync/s of 4 KiB appends (same directory)")
    env = {**environment(), "fdatasync_4k_ops_s": fsyncs}
    doc = {"environment": env, "quick": args.quick, "results": results, "raft_cycles_s": raft}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        note = f"\nDisk baseline at the time: {_fmt(fsyncs)} fdatasync/s (4 KiB appends).\n"
        if raft:
            note += (
                f"\nRaft log cycles, synced: each persists {RAFT_ENTRIES} entries of "
                f"{RAFT_ENTRY_BYTES} bytes and a hard state for each of {RAFT_GROUPS} groups "
                "through `EngineLogStorage` (the 64-partition mix's shape).\n\n"
                "| raft log in | cycles/s | ms per cycle |\n|---|---:|---:|\n"
                + "".join(
                    f"| {label} | {_fmt(rate)} | {1000 / rate:.2f} |\n"
                    for label, rate in raft.items()
                )
            )
        args.markdown.write_text(markdown(results) + note, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
