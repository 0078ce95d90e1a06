"""A fault-injecting TCP proxy in front of every node: links cut per direction.

Owns: one listener per destination node (the address the node advertises, so every
peer dials it), learning which node is calling from the transport's first frame (the
``atoll.hello`` frame names the dialer's listen address), forwarding bytes to the node's
real listener, and cutting links.
Never: changes or reorders the bytes of a live connection, and never drops part of a
frame (that would only test the decoder): a cut closes the link's live connections, and
new connections on a cut link are accepted, then black-holed (read and discarded, no
reply, like dropped packets) until the link heals, when they are closed so the dialer
reconnects.

Direction. Between listening nodes, A's messages to B travel on the connection A dialed
to B (replies to A's requests come back on it); B's messages to A travel on B's own
connection to A. So cutting (A, B) silences A -> B while B -> A still flows: a true
one-way cut. Client connections (a ``client:...`` hello) are never cut.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
import anyio.abc

from atoll.core import FrameDecoder, FrameError, parse_address

__all__ = ["CLIENT", "LinkProxy", "LinkStats"]

log = logging.getLogger("atoll_chaos.proxy")

CLIENT = "client"
_HELLO = "atoll.hello"
_CHUNK = 64 * 1024


@dataclass
class LinkStats:
    """What one directed link (src -> dst) has carried and suffered."""

    connections: int = 0
    bytes_forwarded: int = 0
    bytes_dropped: int = 0
    connections_cut: int = 0
    connections_black_holed: int = 0


@dataclass(eq=False)
class _Conn:
    src: str
    dst: str
    scope: anyio.CancelScope
    black_holed: bool = False


@dataclass
class LinkProxy:
    """Proxies for every node. ``listen[node]`` is what peers dial, ``upstream[node]`` the
    node's real listener, ``sources[address]`` the node id behind a hello address."""

    listen: dict[str, str]
    upstream: dict[str, str]
    sources: dict[str, str]
    _blocked: set[tuple[str, str]] = field(default_factory=set)
    _conns: set[_Conn] = field(default_factory=set)
    stats: dict[tuple[str, str], LinkStats] = field(default_factory=dict)
    _tg: anyio.abc.TaskGroup | None = None

    # ------------------------------------------------------------------ control

    def blocked(self, src: str, dst: str) -> bool:
        """Whether ``src -> dst`` is cut."""
        return (src, dst) in self._blocked

    def cut(self, src: str, dst: str) -> None:
        """Silence ``src -> dst`` now: close its live connections, black-hole new ones."""
        self._blocked.add((src, dst))
        for c in list(self._conns):
            if (c.src, c.dst) == (src, dst) and not c.black_holed:
                self._link(src, dst).connections_cut += 1
                c.scope.cancel()

    def heal(self, src: str, dst: str) -> None:
        """Let ``src -> dst`` flow again; black-holed connections close so peers redial."""
        self._blocked.discard((src, dst))
        for c in list(self._conns):
            if (c.src, c.dst) == (src, dst) and c.black_holed:
                c.scope.cancel()

    def heal_all(self) -> None:
        """Heal every link."""
        for src, dst in list(self._blocked):
            self.heal(src, dst)

    def cut_links(self) -> set[tuple[str, str]]:
        """The links cut now."""
        return set(self._blocked)

    def _link(self, src: str, dst: str) -> LinkStats:
        return self.stats.setdefault((src, dst), LinkStats())

    # ------------------------------------------------------------------ serving

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen for every node until cancelled; returns to ``start`` once all listen."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for dst, addr in self.listen.items():
                host, port = parse_address(addr, what="proxy listen address")
                listener = await anyio.create_tcp_listener(
                    local_host=host, local_port=port, reuse_port=False
                )
                tg.start_soon(self._accept, dst, listener)
            task_status.started()

    async def _accept(self, dst: str, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        async with listener:
            await listener.serve(lambda s: self._handle(dst, s))

    async def _handle(self, dst: str, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            first = bytearray()
            decoder = FrameDecoder()
            src = CLIENT
            with anyio.move_on_after(10):
                try:
                    while True:
                        data = await stream.receive(_CHUNK)
                        first += data
                        frames = decoder.feed(data)
                        if frames:
                            src = self._source_of(frames[0].type, frames[0].header)
                            break
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError, FrameError):
                    return
            if not first:
                return
            conn = _Conn(src, dst, anyio.CancelScope())
            self._conns.add(conn)
            stats = self._link(src, dst)
            stats.connections += 1
            try:
                with conn.scope:
                    if src != CLIENT and self.blocked(src, dst):
                        conn.black_holed = True
                        stats.connections_black_holed += 1
                        stats.bytes_dropped += len(first)
                        await self._black_hole(stream, stats)
                        return
                    await self._forward(conn, stream, bytes(first), stats)
            finally:
                self._conns.discard(conn)

    def _source_of(self, frame_type: str, header: dict[str, object]) -> str:
        if frame_type != _HELLO:
            return CLIENT
        addr = header.get("address")
        if not isinstance(addr, str):
            return CLIENT
        return self.sources.get(addr, CLIENT)

    async def _black_hole(self, stream: anyio.abc.SocketStream, stats: LinkStats) -> None:
        try:
            while True:
                stats.bytes_dropped += len(await stream.receive(_CHUNK))
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return

    async def _forward(
        self, conn: _Conn, stream: anyio.abc.SocketStream, first: bytes, stats: LinkStats
    ) -> None:
        host, port = parse_address(self.upstream[conn.dst], what="proxy upstream")
        try:
            up = await anyio.connect_tcp(host, port)
        except OSError:
            return  # the node is down: the dialer sees its connection close
        async with up, anyio.create_task_group() as tg:

            async def pump(
                a: anyio.abc.SocketStream, b: anyio.abc.SocketStream, count: bool
            ) -> None:
                try:
                    while True:
                        data = await a.receive(_CHUNK)
                        await b.send(data)
                        if count:
                            stats.bytes_forwarded += len(data)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    pass
                tg.cancel_scope.cancel()

            try:
                await up.send(first)
            except (anyio.BrokenResourceError, OSError):
                return
            tg.start_soon(pump, stream, up, True)
            tg.start_soon(pump, up, stream, False)


def partition_links(groups: Iterable[Iterable[str]]) -> set[tuple[str, str]]:
    """Every directed link between nodes of different groups (a node may be in several
    groups: a bridge)."""
    gs = [set(g) for g in groups]
    nodes = set().union(*gs) if gs else set()
    links: set[tuple[str, str]] = set()
    for a in nodes:
        for b in nodes:
            if a != b and not any(a in g and b in g for g in gs):
                links.add((a, b))
    return links
