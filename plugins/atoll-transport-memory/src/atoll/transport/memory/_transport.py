"""The memory transport: Atoll frames over an in-process :class:`MemoryNetwork`.

Owns: encoding frames to bytes and back (so nodes never share mutable headers and the
frame limit and codec errors behave exactly as on TCP), request/reply pairing, handler
dispatch, and failing requests to a peer that detaches.
Never: shares Python objects between nodes, or sleeps to imitate latency (the network's
link faults do that).
"""

from __future__ import annotations

import logging

import anyio
import attrs

from atoll.core import (
    Frame,
    FrameError,
    FrameHandler,
    PeerUnreachable,
    TransportClosed,
    TransportConfig,
    TransportError,
    decode_frame,
)
from atoll.core.rpc import (
    PendingRequests,
    TaskHost,
    answer,
    deliver_one_way,
    encode_within,
)
from atoll.testing import MemoryEndpoint, MemoryNetwork

__all__ = ["MemoryStats", "MemoryTransport"]

log = logging.getLogger("atoll.transport.memory")


@attrs.define
class MemoryStats:
    """Counters describing what a :class:`MemoryTransport` has done (``statistics()``)."""

    frames_sent: int = 0
    frames_received: int = 0
    frames_dropped: int = 0
    """One-way frames to a detached peer, or dropped after waiting ``send_timeout``."""
    bad_frames: int = 0
    """Inbound messages that were not valid Atoll frames (logged and discarded)."""
    pending_requests: int = 0


class MemoryTransport:
    """A :class:`atoll.core.Transport` on a :class:`MemoryNetwork`, in real time.

    :param network: the network shared by every node of a test or simulation.
    :param address: this transport's name on that network.
    :param config: ``send_queue`` sizes the inbox, ``max_frame_mb`` the frame limit;
        ``options["send_timeout"]`` (default 5 s) bounds how long ``send`` waits on a full
        inbox before dropping.
    """

    def __init__(
        self, network: MemoryNetwork, address: str, config: TransportConfig | None = None
    ) -> None:
        if not address:
            raise TransportError("a memory transport needs a non-empty address")
        self._network = network
        self._address = address
        self._config = config or TransportConfig(backend="memory")
        self._max_frame = self._config.max_frame_mb * 1024 * 1024
        self._send_timeout = float(self._config.options.get("send_timeout", 5.0))
        self._endpoint: MemoryEndpoint | None = None
        self._handler: FrameHandler | None = None
        self._host = TaskHost(log)
        self._pending = PendingRequests()
        self._stats = MemoryStats()
        self._closed = False

    @property
    def backend(self) -> str:
        """Always ``"memory"``."""
        return "memory"

    @property
    def address(self) -> str:
        """This transport's name on its network."""
        return self._address

    @property
    def network(self) -> MemoryNetwork:
        """The network this transport is attached to (inject faults through it)."""
        return self._network

    def statistics(self) -> MemoryStats:
        """A snapshot of this transport's counters."""
        self._stats.pending_requests = len(self._pending)
        return attrs.evolve(self._stats)

    async def start(self, handler: FrameHandler) -> None:
        """Attach to the network and start dispatching frames to ``handler``."""
        if self._closed:
            raise TransportClosed(f"memory transport {self._address} is closed")
        if self._endpoint is not None:
            raise TransportError(f"memory transport {self._address} is already started")
        self._handler = handler
        self._endpoint = self._network.register(
            self._address, capacity=self._config.send_queue, on_peer_gone=self._peer_gone
        )
        await self._host.start()
        self._host.spawn(self._pump, self._endpoint)

    async def send(self, address: str, frame: Frame) -> None:
        """Send a one-way frame; dropped (and counted) if the peer is gone or stays full."""
        self._check_open()
        data = self._encode(frame)
        delivered = False
        with anyio.move_on_after(self._send_timeout):
            delivered = await self._network.send(self._address, address, data)
        if delivered:
            self._stats.frames_sent += 1
        else:
            self._stats.frames_dropped += 1

    async def request(self, address: str, frame: Frame, *, timeout: float) -> Frame:
        """Send ``frame`` and return the reply (see :class:`atoll.core.Transport`)."""
        self._check_open()

        async def send(data: bytes, rid: int) -> None:
            if not await self._network.send(self._address, address, data):
                raise PeerUnreachable(f"memory peer {address!r} is not on the network")
            self._stats.frames_sent += 1

        return await self._pending.call(
            address, frame, timeout=timeout, encode=self._encode, send=send
        )

    async def close(self) -> None:
        """Detach from the network and fail pending requests. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending.fail_all(TransportClosed(f"memory transport {self._address} closed"))
        if self._endpoint is not None:
            self._endpoint.close()
        await self._host.stop()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed(f"memory transport {self._address} is closed")
        if self._endpoint is None:
            raise TransportError(f"memory transport {self._address} is not started")

    def _encode(self, frame: Frame) -> bytes:
        return encode_within(frame, self._config.max_frame_mb)

    def _peer_gone(self, address: str) -> None:
        self._pending.fail_peer(
            address, PeerUnreachable(f"memory peer {address!r} left the network")
        )

    async def _pump(self, endpoint: MemoryEndpoint) -> None:
        handler = self._handler
        assert handler is not None
        while True:
            try:
                src, data = await endpoint.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            try:
                frame = decode_frame(data, max_frame_bytes=self._max_frame)
            except FrameError as exc:
                self._stats.bad_frames += 1
                log.error("discarding a message from %s: %s", src, exc)
                continue
            self._stats.frames_received += 1
            if frame.is_reply:
                self._pending.resolve(frame)
            elif frame.is_request:
                self._host.spawn(self._answer, handler, frame, src)
            else:
                await deliver_one_way(handler, frame, src, log)

    async def _answer(self, handler: FrameHandler, frame: Frame, src: str) -> None:
        reply = await answer(handler, frame, src, log)
        if self._closed:
            return
        with anyio.move_on_after(self._send_timeout):
            await self._network.send(self._address, src, reply)
