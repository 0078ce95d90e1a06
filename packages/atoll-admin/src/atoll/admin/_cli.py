"""The ``atoll`` command: local dev cluster, status, key-value operations, workloads.

Owns: the command-line surface (typer) and its human-readable output (rich).
Never: holds cluster logic; it calls the dev-cluster manager, the client library and the
nodes' admin requests.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atoll.client import AtollClient
from atoll.core import (
    AtollError,
    ConfigError,
    Consistency,
    loop_options,
    running_loop_name,
    tune_gc,
)

from ._connect import DEFAULT_DEV_DIR, resolve_endpoints
from ._dev import DevCluster, fetch_status
from ._workload import run_workload

__all__ = ["app", "main"]

app = typer.Typer(help="Operate an Atoll cluster.", no_args_is_help=True, add_completion=False)
dev = typer.Typer(help="A local cluster on loopback for development.", no_args_is_help=True)
app.add_typer(dev, name="dev")
console = Console()
err = Console(stderr=True)

Endpoints = Annotated[
    str | None,
    typer.Option("--endpoints", "-e", help="Comma-separated host:port (default: the dev cluster)"),
]
DevDir = Annotated[Path, typer.Option("--dir", help="Where the dev cluster keeps its files")]


def _fail(msg: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


@dev.command("up")
def dev_up(
    nodes: Annotated[int, typer.Option("-n", "--nodes", min=1, max=9)] = 3,
    dir: DevDir = DEFAULT_DEV_DIR,
    base_port: Annotated[int, typer.Option(help="First node's port")] = 7401,
    storage: Annotated[str, typer.Option(help="Storage backend")] = "lmdb",
    transport: Annotated[str, typer.Option(help="Transport backend")] = "tcp",
    partitions: Annotated[int, typer.Option(help="Partitions of the default keyspace")] = 16,
    rf: Annotated[int, typer.Option(help="Replication factor")] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness")] = 60.0,
) -> None:
    """Start a local cluster of node processes and wait until it serves."""
    cluster = DevCluster(dir)
    if cluster.state():
        _fail(f"a dev cluster is already recorded in {dir}; run `atoll dev down` first")
    descs = cluster.write_configs(
        nodes,
        base_port=base_port,
        storage=storage,
        transport=transport,
        partitions=partitions,
        rf=min(rf, nodes),
        sync=True,
    )
    cluster.start(descs)
    console.print(f"started {nodes} nodes ({transport} + {storage}); data in {dir}/data")
    t0 = time.monotonic()
    try:
        with console.status("waiting for leaders...") as spin:
            statuses = cluster.wait_ready(
                timeout,
                on_poll=lambda st: spin.update(
                    f"waiting for leaders... {sum(1 for s in st.values() if s.get('ready'))}"
                    f"/{nodes} nodes ready"
                ),
            )
    except (TimeoutError, AtollError) as exc:
        cluster.stop()
        _fail(str(exc))
        return
    console.print(f"[green]ready[/] in {time.monotonic() - t0:.1f}s")
    _print_status(list(statuses.values()))
    eps = ",".join(d["endpoint"] for d in descs)
    console.print(f"\nconnect: [bold]atoll put hello world[/]  (endpoints {eps})")
    console.print(f"python:  AtollClient([{', '.join(repr(d['endpoint']) for d in descs)}])")
    console.print("stop:    [bold]atoll dev down[/]")
    native = {pkg: st for s in statuses.values() for pkg, st in (s.get("native") or {}).items()}
    if native and set(native.values()) == {"native"}:
        console.print("core:    compiled (mypyc)")
    elif any(st.startswith("switched off") for st in native.values()):
        console.print("core:    pure Python (ATOLL_NATIVE=0)")
    elif native:
        console.print(
            "core:    pure Python; [bold]uv run python -m atoll.core.native build[/] "
            "compiles it (~30% less node CPU per operation; nodes started after it use it)"
        )


@dev.command("down")
def dev_down(dir: DevDir = DEFAULT_DEV_DIR) -> None:
    """Stop the local cluster (its data stays in the directory)."""
    stopped = DevCluster(dir).stop()
    console.print(f"stopped {', '.join(stopped)}" if stopped else "no dev cluster is running")


def _print_status(statuses: list[dict[str, Any]]) -> None:
    table = Table(title="Atoll cluster")
    for col in ("node", "address", "epoch", "ready", "groups", "leaders", "storage", "uptime"):
        table.add_column(col)
    for s in sorted(statuses, key=lambda s: s["node_id"]):
        table.add_row(
            s["node_id"],
            s["address"],
            str(s["epoch"]),
            "yes" if s["ready"] else "no",
            str(len(s["groups"])),
            str(s["leaders"]),
            s["storage"],
            f"{s['uptime_s']:.0f}s",
        )
    console.print(table)


@app.command()
def status(endpoints: Endpoints = None, json: bool = False) -> None:
    """Show every node's status (like `etcdctl endpoint status`)."""
    eps = resolve_endpoints(endpoints)

    async def gather() -> list[dict[str, Any]]:
        out = []
        for ep in eps:
            try:
                out.append(await fetch_status(ep))
            except (AtollError, OSError) as exc:
                out.append(
                    {
                        "node_id": "?",
                        "address": ep,
                        "epoch": "-",
                        "ready": False,
                        "groups": {},
                        "leaders": 0,
                        "storage": "-",
                        "uptime_s": 0,
                        "error": str(exc),
                    }
                )
        return out

    statuses = anyio.run(gather)
    if json:
        sys.stdout.write(orjson.dumps(statuses, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_status(statuses)
    if any("error" in s for s in statuses):
        raise typer.Exit(1)


def _with_client(endpoints: str | None, fn: Any) -> Any:
    async def run() -> Any:
        async with AtollClient(resolve_endpoints(endpoints)) as c:
            return await fn(c)

    try:
        return anyio.run(run)
    except AtollError as exc:
        _fail(f"{type(exc).__name__}: {exc}")


@app.command()
def put(key: str, value: str, endpoints: Endpoints = None) -> None:
    """Set KEY to VALUE."""
    _with_client(endpoints, lambda c: c.put(key.encode(), value.encode()))
    console.print("OK")


@app.command()
def get(
    key: str,
    endpoints: Endpoints = None,
    stale: Annotated[bool, typer.Option(help="Read any replica (may lag)")] = False,
) -> None:
    """Print the value of KEY (exit 1 if absent)."""
    cons = Consistency.STALE if stale else Consistency.LINEARIZABLE
    v = _with_client(endpoints, lambda c: c.get(key.encode(), consistency=cons))
    if v is None:
        err.print(f"{key}: not found")
        raise typer.Exit(1)
    sys.stdout.write(v.decode(errors="replace") + "\n")


@app.command()
def delete(key: str, endpoints: Endpoints = None) -> None:
    """Remove KEY."""
    existed = _with_client(endpoints, lambda c: c.delete(key.encode()))
    console.print("deleted" if existed else "not found")


@app.command()
def bench(
    endpoints: Endpoints = None,
    ops: Annotated[int, typer.Option("-n", "--ops")] = 5000,
    concurrency: Annotated[int, typer.Option("-c", "--concurrency")] = 64,
    reads: Annotated[float, typer.Option(help="Fraction of reads")] = 0.5,
    value_size: Annotated[int, typer.Option(help="Value bytes")] = 100,
    keys: Annotated[int, typer.Option(help="Distinct keys")] = 10_000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the summary here")] = None,
    coalesce: Annotated[
        bool, typer.Option(help="Send concurrent requests to a node in kv.multi frames")
    ] = True,
    event_loop: Annotated[
        str, typer.Option(help="auto (uvloop if installed), uvloop or asyncio")
    ] = "auto",
) -> None:
    """Run a read/write workload through the public client and summarise it."""
    try:
        backend_options = loop_options(event_loop, what="--event-loop")
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def run() -> dict[str, Any]:
        async with AtollClient(resolve_endpoints(endpoints), timeout=30, coalesce=coalesce) as c:
            with Progress(
                TextColumn("[bold]workload"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as prog:
                task = prog.add_task("ops", total=ops)
                tune_gc()  # a load process is a long-running one too
                res = await run_workload(
                    c,
                    ops=ops,
                    concurrency=concurrency,
                    read_fraction=reads,
                    keys=keys,
                    value_size=value_size,
                    progress=lambda n: prog.advance(task, n),
                )
            summary: dict[str, Any] = dict(res.summary())
            summary.update({f"client_{k}": v for k, v in c.stats.items()})
            summary["event_loop"] = running_loop_name()
        return summary

    summary = anyio.run(run, backend_options=backend_options)
    table = Table(title=f"{ops} ops, {int(reads * 100)}% reads, concurrency {concurrency}")
    for col in ("ops/s", "p50 ms", "p99 ms", "read p99 ms", "write p99 ms", "errors"):
        table.add_column(col)
    table.add_row(
        f"{summary['ops_per_s']:.0f}",
        f"{summary['p50_ms']:.2f}",
        f"{summary['p99_ms']:.2f}",
        f"{summary['read_p99_ms']:.2f}",
        f"{summary['write_p99_ms']:.2f}",
        str(summary["errors"]),
    )
    console.print(table)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))


def main() -> None:
    """Entry point of the ``atoll`` command."""
    app()
