"""The TCP transport: framed node-to-node and client traffic on asyncio protocols.

Owns: the listener, one outbound connection per peer address (reconnected on demand,
with back-off after failures), the hello handshake that tells a server who is calling,
write coalescing, backpressure, and request/reply pairing.
Never: interprets frame contents beyond the transport's own flags and the hello frame;
never lets a bad peer (garbage, oversized frames, resets) take the node down.

Wire: every connection starts with a ``atoll.hello`` frame from the dialing side naming
its advertised address; after that both sides exchange Atoll frames
(:func:`atoll.core.encode_frame`). Replies travel back on the connection that carried
the request, so a client-only transport (no listener) gets its replies without being
dialable, and a server can push frames to such a client over its inbound connection.

Why asyncio protocols rather than anyio streams: at high request rates the per-message
cost decides throughput. Here an inbound chunk is decoded in ``data_received``, a reply
resolves its waiting future right there, a request starts one task, and everything
written in one event-loop iteration leaves in one ``write`` call. The anyio-stream
version spent most of its time in task, memory-channel and cancel-scope machinery per
message (docs/performance.md). The public API stays anyio-friendly: every coroutine
here can be cancelled by an anyio cancel scope on the asyncio backend.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import socket
import time
from typing import Any, cast

import attrs

from atoll.core import (
    ConfigError,
    Frame,
    FrameDecoder,
    FrameError,
    FrameHandler,
    FrameTooLarge,
    PeerUnreachable,
    Timeout,
    TransportClosed,
    TransportConfig,
    TransportError,
    encode_frame,
    parse_address,
)
from atoll.core.rpc import (
    PendingRequests,
    answer,
    as_request,
    deliver_one_way,
    encode_within,
    result_of,
    settle,
)

__all__ = ["TcpStats", "TcpTransport"]

log = logging.getLogger("atoll.transport.tcp")

HELLO = "atoll.hello"
"""Type of the first frame on every connection: ``{"address": ..., "listening": bool}``."""

_MAX_HANDLERS_PER_CONN = 4096
"""Requests of one connection being handled at once; past it the connection stops reading."""
_MAX_INBOX = 4096
"""One-way frames of one connection waiting for the handler; past it reading pauses."""
_BACKOFF_BASE = 0.02
_BACKOFF_MAX = 0.5
_DEFAULT_WRITE_BUFFER_MB = 8.0
_CLOSE_GRACE = 1.0
_EAGER_WRITE_BYTES = 16 * 1024
"""Queued bytes that leave at once instead of at the end of the loop iteration: small
frames are worth coalescing into one write, a big one is not worth delaying (a Raft
append would otherwise wait for whatever else runs in this iteration)."""
"""Seconds ``close`` lets queued bytes drain before cutting the connections."""


@attrs.define
class TcpStats:
    """Counters describing what a :class:`TcpTransport` has done (``statistics()``)."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    frames_dropped: int = 0
    """One-way frames dropped: peer unreachable, backing off, or buffer full past send_timeout."""
    bad_frames: int = 0
    """Inbound connections closed because they sent garbage or an oversized frame."""
    connects: int = 0
    connect_failures: int = 0
    inbound_connections: int = 0
    pending_requests: int = 0
    writes: int = 0
    """Socket writes; ``frames_sent / writes`` is how well writes coalesce."""


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Conn(asyncio.Protocol):
    """One live TCP connection (either direction): decoding, dispatch and coalesced writes."""

    def __init__(self, owner: TcpTransport, peer: _Peer | None) -> None:
        self.owner = owner
        self.peer = peer
        self.outbound = peer is not None
        self.remote = peer.address if peer is not None else ""
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(max_frame_bytes=owner._max_frame)
        self.loop = asyncio.get_running_loop()
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.write_paused = False
        self.writable_waiters: list[asyncio.Future[None]] = []
        self.read_paused = False
        self.handlers = 0
        self.inbox: collections.deque[Frame] = collections.deque()
        self.inbox_wakeup: asyncio.Future[None] | None = None
        self.delivery: asyncio.Task[None] | None = None
        self.closed = False

    # -------------------------------------------------------------- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        owner = self.owner
        high = owner._write_buffer
        transport.set_write_buffer_limits(high=high, low=high // 4)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if owner._closed:
            transport.abort()
            return
        owner._conns.add(self)
        if not self.outbound:
            owner._stats.inbound_connections += 1

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        stats = owner._stats
        stats.bytes_received += len(data)
        try:
            frames = self.decoder.feed(data)
        except FrameError as exc:
            stats.bad_frames += 1
            log.error("closing connection from %s: %s", self.remote or self._peer_name(), exc)
            self.abort()
            return
        # Requests read together start one event-loop turn apart, in order: what one
        # request's handler schedules (the Raft host's cycle for the proposals it made)
        # runs before the next request starts, so a burst of kv.multi frames becomes a
        # pipeline of Raft batches instead of one convoy. None: no request seen yet.
        deferred: collections.deque[Frame] | None = None
        for frame in frames:
            stats.frames_received += 1
            if not self.remote:
                if not self._accept_hello(frame):
                    stats.bad_frames += 1
                    self.abort()
                    return
                continue
            if frame.is_reply:
                owner._pending.resolve(frame)
            elif frame.is_request:
                self.handlers += 1
                if deferred is None:
                    owner._spawn(self._answer(frame))
                    deferred = collections.deque()
                else:
                    deferred.append(frame)
            else:
                self.inbox.append(frame)
        if deferred:
            self.loop.call_soon(self._spawn_deferred, deferred)
        if self.inbox:
            self._wake_delivery()
        if not self.read_paused and (
            self.handlers >= _MAX_HANDLERS_PER_CONN or len(self.inbox) >= _MAX_INBOX
        ):
            self.read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.out.clear()
        self._release_writers()
        if self.inbox_wakeup is not None and not self.inbox_wakeup.done():
            self.inbox_wakeup.set_result(None)
        self.owner._conn_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._release_writers()

    # -------------------------------------------------------------- writing

    def write(self, data: bytes) -> None:
        """Queue ``data``; everything queued in one loop iteration leaves in one write,
        or at once when the queue holds a big frame's worth."""
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(data)
        self.out_bytes += len(data)
        if self.out_bytes >= _EAGER_WRITE_BYTES:
            self._flush()

    def _flush(self) -> None:
        out = self.out
        if not out:
            return
        stats = self.owner._stats
        stats.frames_sent += len(out)
        stats.bytes_sent += self.out_bytes
        stats.writes += 1
        data = out[0] if len(out) == 1 else b"".join(out)
        self.out = []
        self.out_bytes = 0
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if self.writable_waiters and not self.write_paused:
            self._release_writers()

    @property
    def full(self) -> bool:
        """Whether writers must wait: the socket buffer or this iteration's queue is full."""
        return self.write_paused or self.out_bytes >= self.owner._write_buffer

    async def writable(self, timeout: float) -> bool:
        """Wait until the socket buffer drains below its high-water mark; False on timeout."""
        if not self.full:
            return not self.closed
        fut = self.loop.create_future()
        self.writable_waiters.append(fut)
        handle = self.loop.call_later(timeout, settle, fut)
        try:
            await fut
        finally:
            handle.cancel()
            if fut in self.writable_waiters:
                self.writable_waiters.remove(fut)
        return not self.full and not self.closed

    def _release_writers(self) -> None:
        waiters, self.writable_waiters = self.writable_waiters, []
        for fut in waiters:
            settle(fut)

    def abort(self) -> None:
        """Drop the connection now (bad input, or the transport is closing)."""
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Flush what is queued, then close."""
        self._flush()
        if self.transport is not None:
            self.transport.close()

    # -------------------------------------------------------------- dispatch

    def _accept_hello(self, frame: Frame) -> bool:
        address = frame.header.get("address") if frame.type == HELLO else None
        if not isinstance(address, str) or not address:
            log.error(
                "closing connection from %s: expected a %r frame first, got %r",
                self._peer_name(),
                HELLO,
                frame.type,
            )
            return False
        self.remote = address
        if not frame.header.get("listening", True):
            routes = self.owner._routes
            old = routes.get(address)
            routes[address] = self
            if old is not None and old is not self:
                old.close()
        return True

    def _peer_name(self) -> str:
        remote = self.transport.get_extra_info("peername") if self.transport else None
        if isinstance(remote, tuple):
            return _format_address(str(remote[0]), int(remote[1]))
        return "(unknown peer)"

    def _maybe_resume_reading(self) -> None:
        if (
            self.read_paused
            and self.handlers < _MAX_HANDLERS_PER_CONN // 2
            and len(self.inbox) < _MAX_INBOX // 2
            and not self.closed
        ):
            self.read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def _spawn_deferred(self, frames: collections.deque[Frame]) -> None:
        """Start the next request of a read; schedule the rest for the next turn."""
        if self.owner._closed:  # closing: these are never answered, like unread ones
            self.handlers -= len(frames)
            return
        self.owner._spawn(self._answer(frames.popleft()))
        if frames:
            self.loop.call_soon(self._spawn_deferred, frames)

    def _wake_delivery(self) -> None:
        if self.delivery is None:
            self.delivery = self.owner._spawn(self._deliver())
        elif self.inbox_wakeup is not None and not self.inbox_wakeup.done():
            self.inbox_wakeup.set_result(None)

    async def _deliver(self) -> None:
        """Hand one-way frames to the handler one at a time, in arrival order."""
        handler = self.owner._handler
        assert handler is not None
        inbox = self.inbox
        while True:
            while inbox:
                await deliver_one_way(handler, inbox.popleft(), self.remote, log)
                if self.read_paused:
                    self._maybe_resume_reading()
            if self.closed:
                return
            self.inbox_wakeup = self.loop.create_future()
            await self.inbox_wakeup
            self.inbox_wakeup = None

    async def _answer(self, frame: Frame) -> None:
        owner = self.owner
        try:
            assert owner._handler is not None
            reply = await answer(owner._handler, frame, self.remote, log)
            if len(reply) - 4 > owner._max_frame:
                reply = await answer(_too_large_handler(len(reply)), frame, self.remote, log)
            if self.full:
                await self.writable(owner._send_timeout)
            if self.closed:
                log.debug("reply to %r dropped: connection to %s closed", frame.type, self.remote)
                return
            self.write(reply)
        finally:
            self.handlers -= 1
            if self.read_paused:
                self._maybe_resume_reading()


class _Peer:
    """Outbound state for one peer address: the connection, or frames waiting for it."""

    def __init__(self, address: str, host: str, port: int) -> None:
        self.address = address
        self.host = host
        self.port = port
        self.conn: _Conn | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.backlog: list[bytes] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.failures = 0
        self.down_until = 0.0
        self.last_error = ""

    def release_waiters(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            settle(fut)


class TcpTransport:
    """A :class:`atoll.core.Transport` over TCP.

    :param config: the ``[transport]`` section. ``send_queue`` bounds the frames held for
        a peer while its connection is being made; ``max_frame_mb`` the frame size;
        ``connect_timeout`` a dial. ``options["send_timeout"]`` bounds how long ``send``
        waits for a full socket buffer (or a connection being made) before dropping,
        default 5 s; ``options["write_buffer_mb"]`` is the per-connection buffer past
        which senders wait (default 8); ``options["advertise"]`` overrides the
        advertised address.
    :param node_id: used in the pseudo address of a client-only transport.
    :param listen: ``host:port`` to bind (port 0 picks a free port, which then appears
        in :attr:`address`), or ``""`` for a client-only transport that never listens.
    """

    def __init__(
        self, config: TransportConfig | None = None, *, node_id: str = "", listen: str = ""
    ) -> None:
        self._config = config or TransportConfig(backend="tcp")
        self._node_id = node_id
        self._listen = listen
        if listen:
            parse_address(listen, what="transport listen address")
        self._max_frame = self._config.max_frame_mb * 1024 * 1024
        opts = self._config.options
        self._send_timeout = _positive_option(opts, "send_timeout", 5.0)
        self._write_buffer = int(
            _positive_option(opts, "write_buffer_mb", _DEFAULT_WRITE_BUFFER_MB) * 1024 * 1024
        )
        self._advertise = str(opts.get("advertise", ""))
        self._address = ""
        self._handler: FrameHandler | None = None
        self._server: asyncio.Server | None = None
        self._peers: dict[str, _Peer] = {}
        self._routes: dict[str, _Conn] = {}
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending = PendingRequests()
        self._stats = TcpStats()
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ Transport API

    @property
    def backend(self) -> str:
        """Always ``"tcp"``."""
        return "tcp"

    @property
    def address(self) -> str:
        """``host:port`` peers dial, or a pseudo address for a client-only transport."""
        return self._address

    def statistics(self) -> TcpStats:
        """A snapshot of this transport's counters."""
        self._stats.pending_requests = len(self._pending)
        return attrs.evolve(self._stats)

    async def start(self, handler: FrameHandler) -> None:
        """Bind the listener (unless client-only) and start serving; returns once listening."""
        if self._closed:
            raise TransportClosed("tcp transport is closed")
        if self._started:
            raise TransportError(f"tcp transport {self._address} is already started")
        self._handler = handler
        if self._listen:
            host, port = parse_address(self._listen, what="transport listen address")
            loop = asyncio.get_running_loop()
            try:
                self._server = await loop.create_server(
                    lambda: _Conn(self, None), host or None, port, reuse_address=True
                )
            except OSError as exc:
                raise TransportError(f"cannot listen on {self._listen}: {exc}") from exc
            bound = self._server.sockets[0].getsockname()[1]
            self._address = self._advertise or _format_address(host, bound)
        else:
            tag = self._node_id or "anon"
            self._address = f"client:{tag}:{secrets.token_hex(6)}"
        self._started = True

    async def send(self, address: str, frame: Frame) -> None:
        """Queue a one-way frame for ``address``; dropped (and counted) if it cannot go."""
        self._check_open()
        data = self._encode(frame)
        try:
            conn = self._conn_for(address)
        except PeerUnreachable as exc:
            log.warning("dropped a %r frame: %s", frame.type, exc)
            self._stats.frames_dropped += 1
            return
        if conn is None or not await self._put(address, conn, data, self._send_timeout):
            self._stats.frames_dropped += 1
            log.debug("dropped a %r frame to %s: cannot send it now", frame.type, address)

    async def request(self, address: str, frame: Frame, *, timeout: float) -> Frame:
        """Send ``frame`` to ``address`` and return its reply.

        :raises Timeout: no reply within ``timeout`` seconds.
        :raises PeerUnreachable: the peer cannot be connected to, or its connection
            dropped while the request was in flight.
        :raises TransportClosed: this transport is (or got) closed.
        :raises AtollError: the peer's handler raised it.
        """
        self._check_open()
        slot = self._pending.open(address)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            settle(slot.future)

        handle = loop.call_later(timeout, expire)
        try:
            data = self._encode(as_request(frame, slot.rid))
            conn = self._conn_for(address)
            if conn is None:
                raise PeerUnreachable(f"tcp peer {address} is unreachable: {self._why(address)}")
            if not await self._put(address, conn, data, max(0.0, deadline - loop.time())):
                self._check_open()
                if loop.time() < deadline:
                    raise PeerUnreachable(
                        f"tcp peer {address} is unreachable: {self._why(address)}"
                    )
            else:
                await slot.wait()
            if slot.reply is None and slot.error is None:
                assert expired or loop.time() >= deadline
                raise Timeout(f"no reply to {frame.type!r} from {address} within {timeout}s")
            return result_of(slot)
        finally:
            handle.cancel()
            self._pending.discard(slot)

    async def close(self) -> None:
        """Stop listening, close every connection and fail pending requests. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending.fail_all(TransportClosed(f"tcp transport {self._address} closed"))
        if self._server is not None:
            self._server.close()
        for peer in self._peers.values():
            peer.backlog.clear()
            peer.release_waiters()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for conn in list(self._conns):
            conn.close()  # flushes what is queued first
        # Give the sockets a moment to flush and report connection_lost; then cut them.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CLOSE_GRACE
        while self._conns and loop.time() < deadline:
            await asyncio.sleep(0.005)  # deadline-bounded poll for connection_lost callbacks
        for conn in list(self._conns):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed(f"tcp transport {self._address or '(unstarted)'} is closed")
        if not self._started:
            raise TransportError("tcp transport is not started")

    def _encode(self, frame: Frame) -> bytes:
        return encode_within(frame, self._config.max_frame_mb)

    def _why(self, address: str) -> str:
        peer = self._peers.get(address)
        return (peer.last_error if peer is not None else "") or "not connected"

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                log.error("transport task failed", exc_info=exc)

    def _conn_for(self, address: str) -> _Conn | _Peer | None:
        """Where frames for ``address`` go: a live connection, a peer being dialed, or
        None while that peer is known to be down."""
        route = self._routes.get(address)
        if route is not None:
            return route
        if address.startswith("client:"):
            return None
        peer = self._peers.get(address)
        if peer is None:
            try:
                host, port = parse_address(address, what="tcp peer address")
            except ConfigError as exc:
                raise PeerUnreachable(str(exc)) from None
            peer = _Peer(address, host, port)
            self._peers[address] = peer
        if peer.conn is not None:
            return peer.conn
        if peer.connecting is None:
            if peer.down_until > time.monotonic():
                return None
            peer.connecting = self._spawn(self._dial(peer))
        return peer

    async def _put(self, address: str, dest: _Conn | _Peer, data: bytes, timeout: float) -> bool:
        """Hand ``data`` to its connection (waiting for room up to ``timeout``); False if
        it cannot go."""
        if isinstance(dest, _Peer):
            if len(dest.backlog) < self._config.send_queue:
                dest.backlog.append(data)
                return True
            fut = asyncio.get_running_loop().create_future()
            dest.waiters.append(fut)
            handle = asyncio.get_running_loop().call_later(timeout, settle, fut)
            try:
                await fut
            finally:
                handle.cancel()
            if self._closed or dest.conn is None:
                return False
            dest = dest.conn
        if dest.full and not await dest.writable(timeout):
            return False
        if dest.closed:
            return False
        dest.write(data)
        return True

    async def _dial(self, peer: _Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: _Conn(self, peer), peer.host, peer.port),
                    self._config.connect_timeout,
                )
            except (TimeoutError, OSError) as exc:
                self._connect_failed(peer, exc)
                return
            if conn.closed or self._closed:
                conn.abort()
                self._connect_failed(peer, ConnectionResetError("closed while connecting"))
                return
            self._stats.connects += 1
            peer.failures = 0
            peer.last_error = ""
            peer.conn = conn
            conn.write(
                encode_frame(
                    Frame(HELLO, {"address": self._address, "listening": bool(self._listen)})
                )
            )
            backlog, peer.backlog = peer.backlog, []
            for data in backlog:
                conn.write(data)
            peer.release_waiters()
        finally:
            peer.connecting = None

    def _connect_failed(self, peer: _Peer, exc: BaseException) -> None:
        self._stats.connect_failures += 1
        peer.failures += 1
        delay = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** min(peer.failures - 1, 10))
        peer.down_until = time.monotonic() + delay
        peer.last_error = f"connect failed: {exc or type(exc).__name__}"
        dropped = len(peer.backlog)
        peer.backlog = []
        peer.release_waiters()
        self._stats.frames_dropped += dropped
        self._pending.fail_peer(
            peer.address, PeerUnreachable(f"tcp peer {peer.address} is unreachable: {exc}")
        )
        log.debug("cannot reach %s (%s); dropped %d queued frames", peer.address, exc, dropped)

    def _conn_lost(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        routed = False
        if conn.outbound:
            assert conn.peer is not None
            if conn.peer.conn is conn:
                conn.peer.conn = None
        elif conn.remote and self._routes.get(conn.remote) is conn:
            del self._routes[conn.remote]
            routed = True
        if conn.remote and (conn.outbound or routed) and not self._closed:
            self._pending.fail_peer(
                conn.remote, PeerUnreachable(f"connection to tcp peer {conn.remote} lost")
            )


def _positive_option(opts: dict[str, Any], name: str, default: float) -> float:
    value = opts.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0:
        raise ConfigError(
            f"transport.options.{name} = {value!r} is not valid: expected a number > 0"
        )
    return number


def _too_large_handler(size: int) -> FrameHandler:
    async def refuse(frame: Frame, sender: str) -> Frame:
        raise FrameTooLarge(f"reply to {frame.type!r} of {size} bytes exceeds the frame limit")

    return refuse
