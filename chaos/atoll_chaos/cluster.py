"""A real multi-process Atoll cluster whose processes, links and clocks can be attacked.

Owns: planning addresses for a network mode (``proxy``: nodes on loopback behind a
:class:`LinkProxy`; ``netns``: one namespace per node, :class:`NetnsNetwork`), writing
node configs, starting nodes (``python -m atoll.node`` with ``ATOLL_TEST_CLOCK_FILE`` so
clocks can be skewed), signals (kill -9, SIGSTOP/SIGCONT), restarts, status polling with deadlines,
and a joining node for membership changes.
Never: reaches into a node's memory; everything goes through processes, sockets and the
``admin.status`` request an operator would use.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .clock import CLOCK_ENV, write_skew
from .netns import NetnsNetwork
from .proxy import LinkProxy

__all__ = ["ChaosCluster", "NetMode", "NodeProc"]

NetMode = Literal["proxy", "netns"]
CHAOS_DIR = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


@dataclass
class NodeProc:
    """One node: its addresses, config, log and current process."""

    id: str
    listen: str
    """Where the node binds (and where the harness polls its status)."""
    advertise: str
    """What peers and clients dial (the proxy in proxy mode)."""
    config: Path
    log: Path
    clock_file: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    @property
    def pid(self) -> int | None:
        """The running process id, if started."""
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        """Whether the process runs (a paused process is alive)."""
        return self.proc is not None and self.proc.poll() is None


@dataclass
class ChaosCluster:
    """``n`` initial members (plus ``spare`` joiners, not started) under ``root``."""

    root: Path
    n: int = 3
    mode: NetMode = "proxy"
    partitions: int = 2
    tick_ms: int = 50
    election_ticks: int = 10
    max_clock_drift_ms: int = 50
    snapshot_interval_entries: int = 400
    """Small, so every run builds snapshots, compacts logs and installs snapshots on
    replicas that were killed or cut off while the log moved past them."""
    lease_reads: bool = True
    storage: str = "lmdb"
    """The nodes' storage backend (``lmdb``, the embedded default, or ``rocksdb``)."""
    spare: int = 1
    nodes: dict[str, NodeProc] = field(default_factory=dict)
    proxy: LinkProxy | None = None
    netns: NetnsNetwork | None = None

    # ------------------------------------------------------------------ planning

    def plan(self) -> None:
        """Pick addresses and write every node's config (initial members and spares)."""
        self.root.mkdir(parents=True, exist_ok=True)
        ids = [f"n{i}" for i in range(1, self.n + self.spare + 1)]
        if self.mode == "proxy":
            ports = free_ports(2 * len(ids))
            listen = {nid: f"127.0.0.1:{ports[i]}" for i, nid in enumerate(ids)}
            adv = {nid: f"127.0.0.1:{ports[len(ids) + i]}" for i, nid in enumerate(ids)}
            self.proxy = LinkProxy(
                listen=dict(adv), upstream=dict(listen), sources={a: n for n, a in listen.items()}
            )
        else:
            self.netns = NetnsNetwork(ids)
            self.netns.setup()
            listen = {nid: f"{self.netns.address(nid)}:7400" for nid in ids}
            adv = dict(listen)
        initial = ids[: self.n]
        members = ", ".join(f'"{nid}={adv[nid]}"' for nid in initial)
        seeds = ", ".join(f'"{adv[nid]}"' for nid in initial)
        for i, nid in enumerate(ids):
            cfg = self.root / f"{nid}.toml"
            joiner = nid not in initial
            cfg.write_text(
                f"""# Written by the Atoll chaos harness ({self.mode} network).
[node]
id = "{nid}"
listen = "{listen[nid]}"
advertise = "{adv[nid]}"
zone = "z{i % 3 + 1}"
rack = "r{i + 1}"
data_dir = "{self.root / "data" / nid}"
{f"seeds = [{seeds}]" if joiner else ""}

[cluster]
id = "atoll-chaos"
{"" if joiner else f"initial_members = [{members}]"}
partitions = {self.partitions}
replication_factor = {min(3, self.n)}

[storage]
backend = "{self.storage}"
sync = true

[transport]
backend = "tcp"

[raft]
tick_ms = {self.tick_ms}
election_ticks = {self.election_ticks}
lease_reads = {"true" if self.lease_reads else "false"}
max_clock_drift_ms = {self.max_clock_drift_ms}
snapshot_interval_entries = {self.snapshot_interval_entries}
"""
            )
            self.nodes[nid] = NodeProc(
                nid,
                listen[nid],
                adv[nid],
                cfg,
                self.root / f"{nid}.log",
                self.root / f"{nid}.clock.json",
            )
            write_skew(self.nodes[nid].clock_file)

    @property
    def initial(self) -> list[str]:
        """The initial members' ids."""
        return [f"n{i}" for i in range(1, self.n + 1)]

    def endpoints(self) -> list[str]:
        """What clients dial: the advertised addresses of the initial members."""
        return [self.nodes[n].advertise for n in self.initial]

    # ------------------------------------------------------------------ processes

    def start(self, node_id: str) -> None:
        """Start (or restart) one node process."""
        node = self.nodes[node_id]
        if node.alive():
            raise RuntimeError(f"node {node_id} is already running (pid {node.pid})")
        prefix = self.netns.exec_prefix(node_id) if self.netns is not None else []
        env = dict(os.environ)
        env[CLOCK_ENV] = str(node.clock_file)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(CHAOS_DIR), *filter(None, [env.get("PYTHONPATH")])]
        )
        with open(node.log, "ab") as logf:
            node.proc = subprocess.Popen(
                [
                    *prefix,
                    sys.executable,
                    "-m",
                    "atoll.node",
                    "--config",
                    str(node.config),
                    "--log-format",
                    "json",
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        node.paused = False
        node.starts += 1

    def kill(self, node_id: str, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Signal one node; for SIGKILL/SIGTERM wait (deadline) until it has exited."""
        node = self.nodes[node_id]
        if node.proc is None or not node.alive():
            return
        if node.paused and sig in (signal.SIGKILL, signal.SIGTERM):
            node.proc.send_signal(signal.SIGCONT)
            node.paused = False
        node.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout)

    def pause(self, node_id: str) -> None:
        """SIGSTOP the node."""
        node = self.nodes[node_id]
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)
        node.paused = True

    def resume(self, node_id: str) -> None:
        """SIGCONT the node."""
        node = self.nodes[node_id]
        if node.proc is not None and node.paused:
            node.proc.send_signal(signal.SIGCONT)
        node.paused = False

    def process_state(self, node_id: str) -> str:
        """The kernel's view of the process: ``R``/``S``/``T`` (stopped), or ``dead``."""
        node = self.nodes[node_id]
        if node.proc is None or node.proc.poll() is not None:
            return "dead"
        try:
            stat = Path(f"/proc/{node.proc.pid}/stat").read_bytes()
        except OSError:
            return "dead"
        return stat.rsplit(b")", 1)[1].split()[0].decode()

    def skew(self, node_id: str, *, rate: float = 1.0, offset_ms: float = 0.0) -> None:
        """Set the node's lease clock rate and forward offset (picked up within ~20 ms)."""
        write_skew(self.nodes[node_id].clock_file, rate=rate, offset_ms=offset_ms)

    # ------------------------------------------------------------------ status

    def status(self, node_id: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """One node's ``admin.status`` (dialed directly, past any proxy), or None."""
        from atoll.admin._dev import fetch_status_sync

        node = self.nodes[node_id]
        if not node.alive() or node.paused:
            return None
        return fetch_status_sync(node.listen, timeout)

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Status of every running node that answers."""
        out = {}
        for nid in self.nodes:
            s = self.status(nid)
            if s is not None:
                out[nid] = s
        return out

    def leader_of_most(self, among: list[str] | None = None) -> str | None:
        """The running node that leads the most groups (the meta group counts double)."""
        best, score = None, -1
        for nid, s in self.statuses().items():
            if among is not None and nid not in among:
                continue
            sc = sum(
                (2 if gid == "0" else 1)
                for gid, g in s.get("groups", {}).items()
                if g.get("role") == "leader"
            )
            if sc > score:
                best, score = nid, sc
        return best

    def wait_healthy(self, timeout: float, nodes: list[str] | None = None) -> None:
        """Poll until the given (default: running) nodes are ready, agree on the map epoch
        and every group they host has a leader they all know."""
        deadline = time.monotonic() + timeout
        last: dict[str, dict[str, Any]] = {}
        while True:
            want = nodes or [n for n, p in self.nodes.items() if p.alive()]
            for nid in want:
                if not self.nodes[nid].alive():
                    raise RuntimeError(f"node {nid} exited; see {self.nodes[nid].log}")
            last = {n: s for n, s in self.statuses().items() if n in want}
            if len(last) == len(want) and _healthy(last):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"cluster not healthy after {timeout:.0f}s; logs in {self.root}; "
                    f"last statuses: {_brief(last)}"
                )
            time.sleep(0.2)  # polling interval of a deadline-bounded wait

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and remove namespaces."""
        for nid in self.nodes:
            self.resume(nid)
        for nid in self.nodes:
            node = self.nodes[nid]
            if node.alive():
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
        for nid in self.nodes:
            if self._still(nid):
                self.kill(nid, signal.SIGKILL, timeout=5.0)
        if self.netns is not None:
            self.netns.teardown()

    def _still(self, nid: str) -> bool:
        node = self.nodes[nid]
        if node.proc is None:
            return False
        try:
            node.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            return True
        return False

    # ------------------------------------------------------------------ network

    def cut(self, src: str, dst: str) -> None:
        """Cut the directed link ``src -> dst``."""
        self._net().cut(src, dst)

    def heal_all(self) -> None:
        """Heal every link."""
        self._net().heal_all()

    def cut_links(self) -> set[tuple[str, str]]:
        """Links cut now."""
        return self._net().cut_links()

    def _net(self) -> LinkProxy | NetnsNetwork:
        net = self.proxy if self.proxy is not None else self.netns
        assert net is not None, "plan() first"
        return net


def _healthy(statuses: dict[str, dict[str, Any]]) -> bool:
    if not all(s.get("ready") for s in statuses.values()):
        return False
    if len({s.get("epoch") for s in statuses.values()}) != 1:
        return False
    for s in statuses.values():
        for g in s.get("groups", {}).values():
            if g.get("leader") is None or g.get("leader") not in statuses:
                return False
    return True


def _brief(statuses: dict[str, dict[str, Any]]) -> str:
    return "; ".join(
        f"{n}: ready={s.get('ready')} epoch={s.get('epoch')} leaders={s.get('leaders')}"
        for n, s in statuses.items()
    )
