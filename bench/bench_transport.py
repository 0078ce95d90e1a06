"""Transport benchmark: request/reply round trips per second for every transport backend.

Owns: measuring ``Transport.request`` throughput (sequential, and with 64 requests in
flight) with a 100-byte payload, for tcp and nats with the server side in a separate
process, and for memory in-process. Prints a table and writes JSON / Markdown.
Never: asserts timings; these are figures to read, not pass/fail checks.

    python bench/bench_transport.py [--quick] [--json out.json] [--markdown out.md]
    python bench/bench_transport.py --backends tcp,memory --seconds 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import anyio

from atoll.core import Frame, Transport, TransportConfig

PAYLOAD = bytes(range(100))
IN_FLIGHT = 64


async def _echo(frame: Frame, sender: str) -> Frame | None:
    if frame.is_request:
        return Frame("r", {}, frame.attachments)
    return None


def _make(backend: str, role: str, nats_url: str, memory_net: Any = None) -> Transport:
    if backend == "tcp":
        from atoll.transport.tcp import TcpTransport

        listen = "127.0.0.1:0" if role == "server" else ""
        return TcpTransport(TransportConfig(backend="tcp"), node_id=role, listen=listen)
    if backend == "nats":
        from atoll.transport.nats import NatsTransport

        cfg = TransportConfig(backend="nats", servers=[nats_url], subject_prefix="bench")
        return NatsTransport(cfg, node_id=role)
    from atoll.transport.memory import MemoryTransport

    return MemoryTransport(memory_net, role, TransportConfig(backend="memory"))


def _serve(backend: str, nats_url: str, conn: Connection) -> None:
    """Child process: run an echo server until the parent says stop."""

    async def main() -> None:
        t = _make(backend, "server", nats_url)
        await t.start(_echo)
        conn.send(t.address)
        await anyio.to_thread.run_sync(conn.recv)
        await t.close()

    anyio.run(main)


async def _sequential(client: Transport, address: str, seconds: float) -> dict[str, Any]:
    frame = Frame("q", {}, (PAYLOAD,))
    warm_until = time.perf_counter() + min(0.3, seconds / 4)
    while time.perf_counter() < warm_until:
        await client.request(address, frame, timeout=10)
    lat: list[float] = []
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        t0 = now
        await client.request(address, frame, timeout=10)
        now = time.perf_counter()
        lat.append(now - t0)
    elapsed = now - start
    lat.sort()
    return {
        "mode": "sequential",
        "requests": len(lat),
        "seconds": round(elapsed, 3),
        "rps": round(len(lat) / elapsed),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 3),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 3),
    }


async def _pipelined(client: Transport, address: str, seconds: float) -> dict[str, Any]:
    frame = Frame("q", {}, (PAYLOAD,))
    done = 0
    lat: list[float] = []
    stop_at = 0.0

    async def worker(measure: bool) -> None:
        nonlocal done
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            await client.request(address, frame, timeout=10)
            if measure:
                done += 1
                if len(lat) < 200_000:
                    lat.append(time.perf_counter() - t0)

    stop_at = time.perf_counter() + min(0.3, seconds / 4)
    async with anyio.create_task_group() as tg:  # warm-up
        for _ in range(IN_FLIGHT):
            tg.start_soon(worker, False)
    start = time.perf_counter()
    stop_at = start + seconds
    async with anyio.create_task_group() as tg:
        for _ in range(IN_FLIGHT):
            tg.start_soon(worker, True)
    elapsed = time.perf_counter() - start
    lat.sort()
    return {
        "mode": f"{IN_FLIGHT} in flight",
        "requests": done,
        "seconds": round(elapsed, 3),
        "rps": round(done / elapsed),
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 3),
    }


async def _bench_backend(backend: str, seconds: float, nats_url: str) -> list[dict[str, Any]]:
    child: mp.process.BaseProcess | None = None
    parent_conn: Connection | None = None
    server: Transport | None = None
    net: Any = None
    if backend == "memory":
        from atoll.transport.memory import MemoryNetwork

        net = MemoryNetwork()
        server = _make(backend, "server", nats_url, net)
        await server.start(_echo)
        address = server.address
        where = "same process"
    else:
        ctx = mp.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe()
        child = ctx.Process(target=_serve, args=(backend, nats_url, child_conn), daemon=True)
        child.start()
        if not await anyio.to_thread.run_sync(parent_conn.poll, 30.0):
            child.terminate()
            raise RuntimeError(f"{backend} echo server did not start within 30s")
        address = parent_conn.recv()
        where = "separate processes"
    client = _make(backend, "client", nats_url, net)
    await client.start(_echo)
    try:
        results = [
            await _sequential(client, address, seconds),
            await _pipelined(client, address, seconds),
        ]
    finally:
        await client.close()
        if server is not None:
            await server.close()
        if child is not None and parent_conn is not None:
            parent_conn.send("stop")
            child.join(10)
            if child.is_alive():
                child.terminate()
    for r in results:
        r["backend"] = backend
        r["processes"] = where
    return results


def _markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Transport benchmark",
        "",
        f"Request/reply with a {len(PAYLOAD)}-byte attachment; client and server on one machine "
        f"({meta['cpus']} CPUs, Python {meta['python']}, {meta['when']}). Figures, not "
        "guarantees: runs vary by ±30%.",
        "",
        "| backend | processes | mode | requests/s | p50 ms | p99 ms | requests |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['processes']} | {r['mode']} | {r['rps']:,} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['requests']:,} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown table")
    parser.add_argument("--quick", action="store_true", help="short runs (about 1 s each)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per run")
    parser.add_argument("--backends", default="tcp,nats,memory", help="comma-separated list")
    args = parser.parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - {"tcp", "nats", "memory"})
    if unknown:
        parser.error(f"--backends: unknown {', '.join(unknown)} (accepted: tcp, nats, memory)")

    nats_server = None
    nats_url = ""
    if "nats" in backends:
        from atoll.testing._nats import NatsServer

        nats_server = NatsServer()
        nats_server.start()
        nats_url = nats_server.url
    results: list[dict[str, Any]] = []
    try:
        for backend in backends:
            for r in anyio.run(_bench_backend, backend, seconds, nats_url):
                results.append(r)
                print(
                    f"{r['backend']:>7} {r['mode']:>13}: {r['rps']:>8,} req/s  "
                    f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms",
                    flush=True,
                )
    finally:
        if nats_server is not None:
            nats_server.close()
    meta = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d"),
        "payload_bytes": len(PAYLOAD),
        "in_flight": IN_FLIGHT,
        "seconds_per_run": seconds,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "transport", "meta": meta, "results": results}, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(_markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
