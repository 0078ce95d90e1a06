"""An in-process, real-time async network: what the memory transport runs on.

Owns: a registry of named endpoints (one per transport), bounded inboxes, and per-link
faults reusing :class:`atoll.testing.LinkFaults` (drop, delay, duplicate, reorder,
partition), applied in real time on the running asyncio loop.
Never: decodes what it carries (payloads are opaque bytes), or reorders a link's
messages except when the ``reorder`` fault picks one.

Unlike :class:`atoll.testing.SimNetwork` (virtual time, callbacks), this network moves
bytes between async tasks in wall-clock time, so code written for TCP or NATS runs on it
unchanged. Messages on one link keep their order (a delayed message holds back the ones
behind it) unless a ``reorder`` fault delays one past its successors. An inbox that is
full makes an undelayed ``send`` wait (backpressure); a delayed message that finds the
inbox full is dropped, like a router's overflowing queue.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Iterable

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from atoll.core import TransportError, make_rng

from ._sim import LinkFaults, NetworkStats

__all__ = ["MemoryEndpoint", "MemoryNetwork", "default_memory_network"]

Message = tuple[str, bytes]
"""``(source address, payload)`` as an endpoint receives it."""


class MemoryEndpoint:
    """One address on a :class:`MemoryNetwork`: a bounded inbox of ``(source, payload)``."""

    def __init__(
        self,
        network: MemoryNetwork,
        address: str,
        capacity: int,
        on_peer_gone: Callable[[str], None] | None,
    ) -> None:
        self.network = network
        self.address = address
        self._sink: MemoryObjectSendStream[Message]
        self._source: MemoryObjectReceiveStream[Message]
        self._sink, self._source = anyio.create_memory_object_stream[Message](capacity)
        self.on_peer_gone = on_peer_gone

    async def receive(self) -> Message:
        """The next message; raises :class:`anyio.EndOfStream` once the endpoint is closed."""
        return await self._source.receive()

    def close(self) -> None:
        """Detach from the network; messages in flight to this address are lost."""
        self.network.unregister(self.address, self)

    def _put_nowait(self, msg: Message) -> bool:
        try:
            self._sink.send_nowait(msg)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    async def _put(self, msg: Message) -> bool:
        try:
            await self._sink.send(msg)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    def _shutdown(self) -> None:
        self._sink.close()


class _LinkQueue:
    """Delayed messages of one link, delivered in order by one timer."""

    __slots__ = ("items", "timer")

    def __init__(self) -> None:
        self.items: deque[tuple[float, bytes]] = deque()
        self.timer: asyncio.TimerHandle | None = None


class MemoryNetwork:
    """Named endpoints connected by links with configurable faults.

    :param default: the fault model of every link not overridden (no faults and no
        delay unless given).
    :param seed: seeds the RNG that decides drops, duplicates, delays and reorders.
    """

    def __init__(self, default: LinkFaults | None = None, *, seed: int = 0) -> None:
        self.default = default or LinkFaults(delay=(0.0, 0.0))
        self._links: dict[tuple[str, str], LinkFaults] = {}
        self._nodes: dict[str, MemoryEndpoint] = {}
        self._queues: dict[tuple[str, str], _LinkQueue] = {}
        self._rng = make_rng(seed)
        self.stats = NetworkStats()

    # ------------------------------------------------------------------ membership

    def register(
        self,
        address: str,
        *,
        capacity: int = 1024,
        on_peer_gone: Callable[[str], None] | None = None,
    ) -> MemoryEndpoint:
        """Attach a new endpoint at ``address``.

        :param capacity: messages its inbox holds before senders wait.
        :param on_peer_gone: called with an address whenever another endpoint detaches
            (a transport fails its requests to that peer).
        :raises TransportError: ``address`` is already in use.
        """
        if not address:
            raise TransportError("a memory network address must not be empty")
        if address in self._nodes:
            raise TransportError(f"memory network address {address!r} is already in use")
        ep = MemoryEndpoint(self, address, capacity, on_peer_gone)
        self._nodes[address] = ep
        return ep

    def unregister(self, address: str, endpoint: MemoryEndpoint | None = None) -> None:
        """Detach ``address`` (a crash or a close); tell the remaining endpoints."""
        ep = self._nodes.get(address)
        if ep is None or (endpoint is not None and ep is not endpoint):
            return
        del self._nodes[address]
        ep._shutdown()
        for key in [k for k in self._queues if address in k]:
            q = self._queues.pop(key)
            if q.timer is not None:
                q.timer.cancel()
            self.stats.dropped += len(q.items)
        for other in list(self._nodes.values()):
            if other.on_peer_gone is not None:
                other.on_peer_gone(address)

    @property
    def addresses(self) -> list[str]:
        """Currently attached addresses."""
        return list(self._nodes)

    def __contains__(self, address: object) -> bool:
        return address in self._nodes

    # ------------------------------------------------------------------ faults

    def link(self, src: str, dst: str) -> LinkFaults:
        """The fault model of ``src -> dst``."""
        return self._links.get((src, dst), self.default)

    def set_link(self, src: str, dst: str, faults: LinkFaults, *, both: bool = True) -> None:
        """Override one link's faults (both directions unless ``both=False``)."""
        self._links[(src, dst)] = faults
        if both:
            self._links[(dst, src)] = attrs.evolve(faults)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Block every link between different groups."""
        gs = [set(g) for g in groups]
        for i, a in enumerate(gs):
            for b in gs[i + 1 :]:
                for x in a:
                    for y in b:
                        for s, d in ((x, y), (y, x)):
                            self._links[(s, d)] = attrs.evolve(self.link(s, d), blocked=True)

    def isolate(self, address: str) -> None:
        """Cut ``address`` off from every other attached address."""
        self.partition([[address], [a for a in self._nodes if a != address]])

    def heal(self) -> None:
        """Remove every partition (other per-link faults stay)."""
        for key, f in list(self._links.items()):
            if f.blocked:
                self._links[key] = attrs.evolve(f, blocked=False)

    def clear_faults(self) -> None:
        """Forget every per-link override."""
        self._links.clear()

    # ------------------------------------------------------------------ traffic

    async def send(self, src: str, dst: str, data: bytes) -> bool:
        """Carry ``data`` from ``src`` to ``dst`` through the link's faults.

        Returns False when ``dst`` is not attached (the caller reports it unreachable);
        True otherwise, even when a fault drops the message, as a real network would.
        May wait while ``dst``'s inbox is full.
        """
        self.stats.sent += 1
        self.stats.bytes_sent += len(data)
        target = self._nodes.get(dst)
        if target is None:
            self.stats.dropped += 1
            return False
        f = self.link(src, dst)
        rng = self._rng
        if f.blocked or (f.drop and rng.random() < f.drop):
            self.stats.dropped += 1
            return True
        copies = 1
        if f.duplicate and rng.random() < f.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            lo, hi = f.delay
            delay = rng.uniform(lo, hi) if hi > 0 else 0.0
            if f.reorder and rng.random() < f.reorder:
                self._deliver_later(src, dst, data, delay + rng.uniform(0, f.reorder_delay))
                continue
            q = self._queues.get((src, dst))
            if delay <= 0 and (q is None or not q.items):
                if await target._put((src, data)):
                    self.stats.delivered += 1
                else:
                    self.stats.dropped += 1
            else:
                self._enqueue(src, dst, data, delay)
        return True

    async def inject(self, src: str, dst: str, data: bytes) -> bool:
        """Deliver ``data`` to ``dst`` as if ``src`` sent it, bypassing every fault."""
        target = self._nodes.get(dst)
        return target is not None and await target._put((src, data))

    def _enqueue(self, src: str, dst: str, data: bytes, delay: float) -> None:
        loop = asyncio.get_running_loop()
        q = self._queues.setdefault((src, dst), _LinkQueue())
        due = loop.time() + delay
        if q.items and q.items[-1][0] > due:
            due = q.items[-1][0]
        q.items.append((due, data))
        if q.timer is None:
            q.timer = loop.call_at(q.items[0][0], self._flush, src, dst)

    def _flush(self, src: str, dst: str) -> None:
        q = self._queues.get((src, dst))
        if q is None:
            return
        q.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while q.items and q.items[0][0] <= now:
            _, data = q.items.popleft()
            self._deliver_now(src, dst, data)
        if q.items:
            q.timer = loop.call_at(q.items[0][0], self._flush, src, dst)
        else:
            del self._queues[(src, dst)]

    def _deliver_later(self, src: str, dst: str, data: bytes, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._deliver_now, src, dst, data)

    def _deliver_now(self, src: str, dst: str, data: bytes) -> None:
        target = self._nodes.get(dst)
        if target is None or self.link(src, dst).blocked or not target._put_nowait((src, data)):
            self.stats.dropped += 1
            return
        self.stats.delivered += 1


@functools.cache
def default_memory_network() -> MemoryNetwork:
    """The process-wide network the memory transport plugin uses when config names none.

    Tests and simulations that want isolation pass their own :class:`MemoryNetwork` in
    ``TransportConfig.options["network"]`` instead.
    """
    return MemoryNetwork()
