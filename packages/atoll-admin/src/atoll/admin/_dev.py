"""The local development cluster: ``atoll dev up -n 3`` / ``atoll dev down``.

Owns: writing one config per node (embedded defaults: TCP on loopback + LMDB), starting
``atoll-node`` processes detached from the terminal, recording their pids and endpoints
in the cluster directory, waiting (polling with a deadline) until every node is ready
and every partition has a leader, and stopping them (SIGTERM, then SIGKILL).
Never: runs node logic in this process.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson

from atoll.core import AtollError, Frame, PeerUnreachable

__all__ = ["DevCluster", "fetch_status"]


def fetch_status_sync(
    endpoint: str,
    timeout: float = 1.0,
    *,
    transport: str = "tcp",
    servers: list[str] | None = None,
) -> dict[str, Any] | None:
    """The node's status, or None if it does not answer.

    Runs its own event loop in a worker thread, so it also works when called from code
    that is itself inside an event loop (tests, the TUI).
    """

    def run() -> dict[str, Any] | None:
        try:
            return anyio.run(
                lambda: fetch_status(endpoint, timeout, transport=transport, servers=servers)
            )
        except (AtollError, OSError, TimeoutError):
            return None

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(run).result()


async def fetch_status(
    endpoint: str,
    timeout: float = 1.0,
    *,
    transport: str = "tcp",
    servers: list[str] | None = None,
) -> dict[str, Any]:
    """Ask the node at ``endpoint`` for ``admin.status``."""
    from ._connect import client_transport

    t = await client_transport(transport, servers)
    try:
        reply = await t.request(endpoint, Frame("admin.status"), timeout=timeout)
        return dict(reply.header)
    finally:
        await t.close()


class DevCluster:
    """A local cluster of node processes whose state lives in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_file = root / "cluster.json"

    def state(self) -> dict[str, Any] | None:
        """The recorded cluster (nodes, pids, endpoints), or None."""
        if not self.state_file.exists():
            return None
        return dict(orjson.loads(self.state_file.read_bytes()))

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`atoll.client.AtollClient` to reach this cluster."""
        from atoll.core import TransportConfig

        st = self.state() or {}
        backend = st.get("transport", "tcp")
        cfg = TransportConfig(backend=backend)
        if st.get("servers"):
            cfg.servers = list(st["servers"])
        return {"transport_backend": backend, "transport_config": cfg}

    def status(self, node_id: str) -> dict[str, Any] | None:
        """One node's ``admin.status``, or None if it does not answer."""
        st = self.state() or {}
        return fetch_status_sync(
            self.node(node_id)["endpoint"],
            transport=st.get("transport", "tcp"),
            servers=st.get("servers") or None,
        )

    def endpoints(self) -> list[str]:
        """Client endpoints of the recorded cluster."""
        st = self.state()
        return [n["endpoint"] for n in st["nodes"]] if st else []

    def write_configs(
        self,
        n: int,
        *,
        base_port: int,
        storage: str,
        transport: str,
        partitions: int,
        rf: int,
        sync: bool,
        nats_servers: list[str] | None = None,
        tick_ms: int = 50,
        telemetry_offset: int | None = 100,
    ) -> list[dict[str, Any]]:
        """Write ``n`` node configs; returns their descriptions.

        Node ``i`` listens on ``base_port + i`` and serves /metrics on
        ``base_port + telemetry_offset + i`` (``telemetry_offset=None``: a free port the
        node picks, reported in its status: what tests use, to avoid port races).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        ids = [f"n{i}" for i in range(1, n + 1)]
        addrs = [
            f"atoll.{nid}" if transport == "nats" else f"127.0.0.1:{base_port + i}"
            for i, nid in enumerate(ids)
        ]
        members = [f"{nid}={a}" for nid, a in zip(ids, addrs, strict=True)]
        self._transport = (transport, list(nats_servers or []))
        nodes = []
        for i, nid in enumerate(ids):
            port = base_port + i
            cfg_path = self.root / f"{nid}.toml"
            members_toml = ", ".join(f'"{m}"' for m in members)
            telemetry = (
                "127.0.0.1:0"
                if telemetry_offset is None
                else f"127.0.0.1:{port + telemetry_offset}"
            )
            servers = ", ".join(f'"{u}"' for u in (nats_servers or []))
            nats_line = f"servers = [{servers}]\n" if nats_servers else ""
            cfg_path.write_text(
                f"""# Generated by `atoll dev up`. Loopback only, no TLS: for development.
[node]
id = "{nid}"
listen = "127.0.0.1:{port}"
zone = "z{i % 3 + 1}"
rack = "r{i + 1}"
data_dir = "{self.root / "data" / nid}"

[cluster]
id = "atoll-dev"
initial_members = [{members_toml}]
partitions = {partitions}
replication_factor = {rf}

[storage]
backend = "{storage}"
sync = {"true" if sync else "false"}

[transport]
backend = "{transport}"
{nats_line}
[raft]
tick_ms = {tick_ms}

[telemetry]
listen = "{telemetry}"
"""
            )
            nodes.append(
                {
                    "id": nid,
                    "config": str(cfg_path),
                    "endpoint": addrs[i],
                    "log": str(self.root / f"{nid}.log"),
                }
            )
        return nodes

    def start(self, nodes: list[dict[str, Any]]) -> None:
        """Spawn one ``atoll-node`` process per node, detached, logging to files."""
        for node in nodes:
            node["pid"] = self._spawn(node)
        transport, servers = getattr(self, "_transport", ("tcp", []))
        self._save(
            {"nodes": nodes, "started": time.time(), "transport": transport, "servers": servers}
        )

    def _spawn(self, node: dict[str, Any]) -> int:
        exe = [sys.executable, "-m", "atoll.node"]
        with open(node["log"], "ab") as logf:
            proc = subprocess.Popen(
                [*exe, "--config", node["config"], "--log-format", "json"],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return proc.pid

    def _save(self, state: dict[str, Any]) -> None:
        self.state_file.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))

    def node(self, node_id: str) -> dict[str, Any]:
        """The recorded description of ``node_id``."""
        st = self.state() or {"nodes": []}
        for n in st["nodes"]:
            if n["id"] == node_id:
                return dict(n)
        raise KeyError(node_id)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one node and, for SIGKILL/SIGTERM, wait until it is gone."""
        pid = self.node(node_id)["pid"]
        if _alive(pid):
            os.kill(pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)  # polling interval of a deadline-bounded wait

    def restart(self, node_id: str) -> None:
        """Start a stopped node again with its config and data."""
        st = self.state()
        assert st is not None
        for n in st["nodes"]:
            if n["id"] == node_id:
                if _alive(n["pid"]):
                    raise RuntimeError(f"node {node_id} is still running")
                n["pid"] = self._spawn(n)
        self._save(st)

    def alive(self, node_id: str) -> bool:
        """Whether the node's process is running."""
        return _alive(self.node(node_id)["pid"])

    def wait_ready(self, timeout: float, on_poll: Any = None) -> dict[str, dict[str, Any]]:
        """Poll every node until all are ready and every data group has a leader."""
        deadline = time.monotonic() + timeout
        last: dict[str, dict[str, Any]] = {}
        st = self.state() or {"nodes": []}
        while True:
            for node in st["nodes"]:
                if not _alive(node["pid"]):
                    raise PeerUnreachable(
                        f"node {node['id']} exited during start-up; see {node['log']}"
                    )
                s = fetch_status_sync(
                    node["endpoint"],
                    transport=st.get("transport", "tcp"),
                    servers=st.get("servers") or None,
                )
                if s is not None:
                    last[node["id"]] = s
            if on_poll is not None:
                on_poll(last)
            if len(last) == len(st["nodes"]) and _all_ready(last):
                return last
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"cluster not ready after {timeout:.0f}s; logs are in {self.root}"
                )
            time.sleep(0.2)  # polling interval of a deadline-bounded wait

    def stop(self, timeout: float = 10.0) -> list[str]:
        """SIGTERM every node, SIGKILL those still running after ``timeout``."""
        st = self.state()
        if not st:
            return []
        stopped = []
        for node in st["nodes"]:
            if _alive(node["pid"]):
                os.kill(node["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in st["nodes"]:
            while _alive(node["pid"]) and time.monotonic() < deadline:
                time.sleep(0.05)  # polling interval of a deadline-bounded wait
            if _alive(node["pid"]):
                os.kill(node["pid"], signal.SIGKILL)
            stopped.append(node["id"])
        self.state_file.unlink(missing_ok=True)
        return stopped


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie that is not our child still answers kill(0); check /proc
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b")")[-1].split()[0] != b"Z"
    except OSError:
        return False


def _all_ready(statuses: dict[str, dict[str, Any]]) -> bool:
    if not all(s.get("ready") for s in statuses.values()):
        return False
    epochs = {s.get("epoch") for s in statuses.values()}
    if len(epochs) != 1:
        return False
    groups: dict[str, bool] = {}
    for s in statuses.values():
        for gid, g in s.get("groups", {}).items():
            groups[gid] = groups.get(gid, False) or g.get("role") == "leader"
    return bool(groups) and all(groups.values())
