"""Real hosts for the chaos suites: one network namespace per node, cut with nftables.

Owns: creating a bridge in the root namespace, one namespace per node joined to it by a
veth pair (private addresses 10.<x>.<y>.0/24 picked per run), an nftables table in each
node's namespace whose input chain drops what a cut says, and removing all of it.
Never: touches interfaces, namespaces or rules it did not create (every name carries
the run's tag), or uses non-private addresses.

Cuts work at the IP layer: cutting ``A -> B`` drops A's packets at B. TCP needs both
directions, so a one-way cut stalls B's connections to A too (their acknowledgements
are dropped) -- that is what a real asymmetric fault does to TCP.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

__all__ = ["NetnsNetwork", "netns_available"]


def _run(*args: str, check: bool = True, input_: str | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, input=input_, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def netns_available() -> str | None:
    """None if namespaces + nftables work here, else why not."""
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed"
    tag = "atollprobe" + secrets.token_hex(2)
    try:
        _run("ip", "netns", "add", tag)
    except RuntimeError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _run("ip", "netns", "exec", tag, "nft", "add", "table", "inet", "probe")
    except RuntimeError as exc:
        return f"nftables does not work in a namespace: {exc}"
    finally:
        _run("ip", "netns", "del", tag, check=False)
    return None


@dataclass
class NetnsNetwork:
    """Namespaces for ``nodes``; ``address(node)`` is its private IP."""

    nodes: list[str]
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    _created: list[str] = field(default_factory=list)
    _bridge: str = ""
    _subnet: str = ""
    _ips: dict[str, str] = field(default_factory=dict)
    _blocked: set[tuple[str, str]] = field(default_factory=set)

    def ns(self, node: str) -> str:
        """The namespace name of ``node``."""
        return f"atoll-{self.tag}-{node}"

    def address(self, node: str) -> str:
        """The node's IP in its namespace."""
        return self._ips[node]

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (clients and the harness)."""
        return f"{self._subnet}.1"

    def exec_prefix(self, node: str) -> list[str]:
        """Prefix a command with this to run it inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.ns(node)]

    def setup(self) -> None:
        """Create the bridge, namespaces, veth links, addresses and nft tables."""
        n = int(self.tag, 16)
        self._subnet = f"10.{200 + n % 50}.{(n // 50) % 250}"
        self._bridge = f"atb{self.tag}"
        try:
            _run("ip", "link", "add", self._bridge, "type", "bridge")
            self._created.append(f"link:{self._bridge}")
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self._bridge)
            _run("ip", "link", "set", self._bridge, "up")
            for i, node in enumerate(self.nodes):
                self._add_node(i, node)
        except BaseException:
            self.teardown()
            raise

    def _add_node(self, i: int, node: str) -> None:
        ns = self.ns(node)
        host_if, peer_if = f"atv{self.tag}{i}", f"atp{self.tag}{i}"
        ip = f"{self._subnet}.{10 + i}"
        _run("ip", "netns", "add", ns)
        self._created.append(f"ns:{ns}")
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        self._created.append(f"link:{host_if}")
        _run("ip", "link", "set", host_if, "master", self._bridge)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "link", "set", peer_if, "netns", ns)
        inside = ["ip", "netns", "exec", ns]
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "link", "set", peer_if, "name", "eth0")
        _run(*inside, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")
        _run(
            *inside,
            "nft",
            "-f",
            "-",
            input_=(
                "table inet atoll_chaos {\n"
                "  chain input { type filter hook input priority 0; policy accept; }\n"
                "}\n"
            ),
        )
        self._ips[node] = ip

    def teardown(self) -> None:
        """Remove everything :meth:`setup` created (idempotent)."""
        for item in reversed(self._created):
            kind, name = item.split(":", 1)
            if kind == "ns":
                _run("ip", "netns", "del", name, check=False)
            else:
                _run("ip", "link", "del", name, check=False)
        self._created.clear()
        self._blocked.clear()

    # ------------------------------------------------------------------ faults

    def blocked(self, src: str, dst: str) -> bool:
        """Whether ``src -> dst`` is cut."""
        return (src, dst) in self._blocked

    def cut(self, src: str, dst: str) -> None:
        """Drop ``src``'s packets at ``dst``."""
        if (src, dst) in self._blocked:
            return
        _run(
            "ip", "netns", "exec", self.ns(dst), "nft", "add", "rule", "inet", "atoll_chaos",
            "input", "ip", "saddr", self.address(src), "counter", "drop",
        )  # fmt: skip
        self._blocked.add((src, dst))

    def heal(self, src: str, dst: str) -> None:
        """Stop dropping ``src``'s packets at ``dst`` (rebuilds ``dst``'s chain)."""
        self._blocked.discard((src, dst))
        self._rebuild(dst)

    def heal_all(self) -> None:
        """Heal every link."""
        dsts = {d for _, d in self._blocked}
        self._blocked.clear()
        for d in dsts:
            self._rebuild(d)

    def cut_links(self) -> set[tuple[str, str]]:
        """The links cut now."""
        return set(self._blocked)

    def _rebuild(self, dst: str) -> None:
        rules = "".join(
            f"add rule inet atoll_chaos input ip saddr {self.address(s)} counter drop\n"
            for s, d in sorted(self._blocked)
            if d == dst
        )
        _run(
            "ip", "netns", "exec", self.ns(dst), "nft", "-f", "-",
            input_="flush chain inet atoll_chaos input\n" + rules,
        )  # fmt: skip

    def dropped_packets(self, dst: str) -> int:
        """Packets the cut rules in ``dst`` have dropped (from the nft counters)."""
        out = _run(
            "ip", "netns", "exec", self.ns(dst), "nft", "list", "chain", "inet", "atoll_chaos",
            "input", check=False,
        )  # fmt: skip
        total = 0
        for line in out.splitlines():
            words = line.split()
            if "packets" in words:
                total += int(words[words.index("packets") + 1])
        return total
