"""The TCP transport: framed node-to-node and client traffic over anyio socket streams.

Owns: the listener, one outbound connection per peer address (reconnected on demand),
the hello handshake that tells a server who is calling, per-connection reader and
coalescing writer tasks, bounded per-peer queues, and request/reply pairing.
Never: interprets frame contents beyond the transport's own flags and the hello frame;
never lets a bad peer (garbage, oversized frames, resets) take the node down.

Wire: every connection starts with a ``atoll.hello`` frame from the dialing side naming
its advertised address; after that both sides exchange Atoll frames
(:func:`atoll.core.encode_frame`). Replies travel back on the connection that carried
the request, so a client-only transport (no listener) gets its replies without being
dialable, and a server can push frames to such a client over its inbound connection.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from anyio.streams.stapled import MultiListener

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
from atoll.core.rpc import PendingRequests, TaskHost, answer, as_request, deliver_one_way, result_of

__all__ = ["TcpStats", "TcpTransport"]

log = logging.getLogger("atoll.transport.tcp")

HELLO = "atoll.hello"
"""Type of the first frame on every connection: ``{"address": ..., "listening": bool}``."""

_RECV_BYTES = 64 * 1024
_BATCH_BYTES = 256 * 1024
_MAX_HANDLERS_PER_CONN = 4096
_BACKOFF_BASE = 0.02
_BACKOFF_MAX = 0.5

_STREAM_GONE = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


@attrs.define
class TcpStats:
    """Counters describing what a :class:`TcpTransport` has done (``statistics()``)."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    frames_dropped: int = 0
    """One-way frames dropped: peer unreachable, backing off, or queue full past send_timeout."""
    bad_frames: int = 0
    """Inbound connections closed because they sent garbage or an oversized frame."""
    connects: int = 0
    connect_failures: int = 0
    inbound_connections: int = 0
    pending_requests: int = 0


class _Conn:
    """One live TCP connection (either direction) and the queue its writer drains."""

    def __init__(
        self,
        stream: anyio.abc.SocketStream,
        sink: MemoryObjectSendStream[bytes],
        source: MemoryObjectReceiveStream[bytes],
        remote: str,
        *,
        outbound: bool,
    ) -> None:
        self.stream = stream
        self.sink = sink
        self.source = source
        self.remote = remote
        self.outbound = outbound
        self.handlers = anyio.Semaphore(_MAX_HANDLERS_PER_CONN)


class _Peer:
    """Outbound state for one peer address: its queue survives reconnects."""

    def __init__(self, address: str, capacity: int) -> None:
        self.address = address
        self.sink, self.source = anyio.create_memory_object_stream[bytes](capacity)
        self.conn: _Conn | None = None
        self.failures = 0
        self.down_until = 0.0
        self.last_error = ""


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _nodelay(stream: anyio.abc.SocketStream) -> None:
    sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TcpTransport:
    """A :class:`atoll.core.Transport` over TCP.

    :param config: the ``[transport]`` section (``send_queue``, ``max_frame_mb``,
        ``connect_timeout``; ``options["send_timeout"]`` bounds how long ``send`` waits for
        room in a full peer queue before dropping, default 5 s; ``options["advertise"]``
        overrides the advertised address).
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
        self._send_timeout = float(opts.get("send_timeout", 5.0))
        if not self._send_timeout > 0:
            raise ConfigError(
                f"transport.options.send_timeout = {self._send_timeout!r} is not valid: "
                "expected a number of seconds > 0"
            )
        self._advertise = str(opts.get("advertise", ""))
        self._address = ""
        self._handler: FrameHandler | None = None
        self._host = TaskHost(log)
        self._listener: MultiListener[anyio.abc.SocketStream] | None = None
        self._peers: dict[str, _Peer] = {}
        self._routes: dict[str, _Conn] = {}
        self._conns: set[_Conn] = set()
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
            try:
                listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
            except OSError as exc:
                raise TransportError(f"cannot listen on {self._listen}: {exc}") from exc
            self._listener = listener
            bound = listener.extra(anyio.abc.SocketAttribute.local_port)
            self._address = self._advertise or _format_address(host, bound)
        else:
            tag = self._node_id or "anon"
            self._address = f"client:{tag}:{secrets.token_hex(6)}"
        await self._host.start()
        if self._listener is not None:
            for sub in self._listener.listeners:
                assert isinstance(sub, anyio.abc.SocketListener)
                self._host.spawn(self._accept_loop, sub)
        self._started = True

    async def send(self, address: str, frame: Frame) -> None:
        """Queue a one-way frame for ``address``; dropped (and counted) if it cannot go."""
        self._check_open()
        data = self._encode(frame)
        try:
            sink = self._sink_for(address)
        except PeerUnreachable as exc:
            log.warning("dropped a %r frame: %s", frame.type, exc)
            sink = None
        if sink is None:
            self._stats.frames_dropped += 1
            return
        with anyio.move_on_after(self._send_timeout) as scope:
            try:
                await sink.send(data)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._check_open()
                self._stats.frames_dropped += 1
                return
        if scope.cancelled_caught:
            self._stats.frames_dropped += 1
            log.debug("dropped a %r frame to %s: its queue stayed full", frame.type, address)

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
        try:
            data = self._encode(as_request(frame, slot.rid))
            with anyio.move_on_after(timeout) as scope:
                sink = self._sink_for(address)
                if sink is None:
                    peer = self._peers.get(address)
                    why = peer.last_error if peer is not None else "not connected"
                    raise PeerUnreachable(f"tcp peer {address} is unreachable: {why}")
                try:
                    await sink.send(data)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    self._check_open()
                    raise PeerUnreachable(f"tcp peer {address}: connection closed") from None
                await slot.event.wait()
            if scope.cancelled_caught:
                raise Timeout(f"no reply to {frame.type!r} from {address} within {timeout}s")
            return result_of(slot)
        finally:
            self._pending.discard(slot)

    async def close(self) -> None:
        """Stop listening, close every connection and fail pending requests. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending.fail_all(TransportClosed(f"tcp transport {self._address} closed"))
        for peer in self._peers.values():
            peer.sink.close()
        for conn in list(self._conns):
            conn.sink.close()
        if self._listener is not None:
            await self._close_quietly(self._listener)
        for conn in list(self._conns):
            await self._close_quietly(conn.stream)
        await self._host.stop()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed(f"tcp transport {self._address or '(unstarted)'} is closed")
        if not self._started:
            raise TransportError("tcp transport is not started")

    def _encode(self, frame: Frame) -> bytes:
        data = encode_frame(frame)
        if len(data) - 4 > self._max_frame:
            raise FrameTooLarge(
                f"frame {frame.type!r} of {len(data) - 4} bytes exceeds "
                f"transport.max_frame_mb = {self._config.max_frame_mb}"
            )
        return data

    def _sink_for(self, address: str) -> MemoryObjectSendStream[bytes] | None:
        """The queue feeding ``address``; None while that peer is known to be down."""
        route = self._routes.get(address)
        if route is not None:
            return route.sink
        if address.startswith("client:"):
            return None
        peer = self._peers.get(address)
        if peer is None:
            try:
                parse_address(address, what="tcp peer address")
            except ConfigError as exc:
                raise PeerUnreachable(str(exc)) from None
            peer = _Peer(address, self._config.send_queue)
            self._peers[address] = peer
            self._host.spawn(self._peer_loop, peer)
        if peer.conn is None and peer.down_until > time.monotonic():
            return None
        return peer.sink

    async def _close_quietly(self, resource: anyio.abc.AsyncResource) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await resource.aclose()
            except Exception:
                pass

    async def _accept_loop(self, listener: anyio.abc.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as exc:  # EMFILE and friends: keep serving the others
                log.error("accept on %s failed: %s", self._address, exc)
                await anyio.sleep(0.05)
                continue
            self._host.spawn(self._serve_inbound, stream)

    async def _serve_inbound(self, stream: anyio.abc.SocketStream) -> None:
        self._stats.inbound_connections += 1
        try:
            _nodelay(stream)
        except OSError:
            pass
        sink, source = anyio.create_memory_object_stream[bytes](self._config.send_queue)
        conn = _Conn(stream, sink, source, "", outbound=False)
        await self._run_conn(conn)

    async def _peer_loop(self, peer: _Peer) -> None:
        host, port = parse_address(peer.address, what="tcp peer address")
        while True:
            try:
                first = await peer.source.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            try:
                with anyio.fail_after(self._config.connect_timeout):
                    stream = await anyio.connect_tcp(host, port)
            except (OSError, TimeoutError) as exc:
                self._connect_failed(peer, first, exc)
                continue
            self._stats.connects += 1
            peer.failures = 0
            peer.last_error = ""
            try:
                _nodelay(stream)
                hello = Frame(HELLO, {"address": self._address, "listening": bool(self._listen)})
                await stream.send(encode_frame(hello) + first)
            except _STREAM_GONE as exc:
                await self._close_quietly(stream)
                self._connect_failed(peer, None, exc)
                continue
            self._stats.frames_sent += 1
            self._stats.bytes_sent += len(first)
            conn = _Conn(stream, peer.sink, peer.source, peer.address, outbound=True)
            peer.conn = conn
            try:
                await self._run_conn(conn)
            finally:
                peer.conn = None
            if self._closed:
                return

    def _connect_failed(self, peer: _Peer, first: bytes | None, exc: BaseException) -> None:
        self._stats.connect_failures += 1
        peer.failures += 1
        delay = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** min(peer.failures - 1, 10))
        peer.down_until = time.monotonic() + delay
        peer.last_error = f"connect failed: {exc or type(exc).__name__}"
        dropped = 0 if first is None else 1
        while True:
            try:
                peer.source.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            dropped += 1
        self._stats.frames_dropped += dropped
        self._pending.fail_peer(
            peer.address, PeerUnreachable(f"tcp peer {peer.address} is unreachable: {exc}")
        )
        log.debug("cannot reach %s (%s); dropped %d queued frames", peer.address, exc, dropped)

    async def _run_conn(self, conn: _Conn) -> None:
        """Serve one connection until either side ends it, then clean up after it."""
        self._conns.add(conn)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, conn, tg.cancel_scope)
                await self._reader(conn, tg)
                tg.cancel_scope.cancel()
        except Exception:
            log.exception("connection with %s failed", conn.remote or "(unidentified peer)")
        finally:
            self._conns.discard(conn)
            await self._close_quietly(conn.stream)
            routed = False
            if not conn.outbound:
                if conn.remote and self._routes.get(conn.remote) is conn:
                    del self._routes[conn.remote]
                    routed = True
                conn.sink.close()
            if conn.remote and (conn.outbound or routed) and not self._closed:
                self._pending.fail_peer(
                    conn.remote, PeerUnreachable(f"connection to tcp peer {conn.remote} lost")
                )

    async def _writer(self, conn: _Conn, scope: anyio.CancelScope) -> None:
        """Drain the connection's queue, coalescing whatever is ready into one write."""
        source, stream, stats = conn.source, conn.stream, self._stats
        try:
            while True:
                try:
                    first = await source.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
                batch = [first]
                size = len(first)
                while size < _BATCH_BYTES:
                    try:
                        item = source.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                        break
                    batch.append(item)
                    size += len(item)
                await stream.send(first if len(batch) == 1 else b"".join(batch))
                stats.frames_sent += len(batch)
                stats.bytes_sent += size
        except _STREAM_GONE:
            pass
        finally:
            scope.cancel()

    async def _reader(self, conn: _Conn, tg: anyio.abc.TaskGroup) -> None:
        decoder = FrameDecoder(max_frame_bytes=self._max_frame)
        stream, stats = conn.stream, self._stats
        while True:
            try:
                data = await stream.receive(_RECV_BYTES)
            except _STREAM_GONE:
                return
            stats.bytes_received += len(data)
            try:
                frames = decoder.feed(data)
            except FrameError as exc:
                stats.bad_frames += 1
                log.error(
                    "closing connection from %s: %s",
                    conn.remote or self._peer_name(stream),
                    exc,
                )
                return
            for frame in frames:
                stats.frames_received += 1
                if not conn.remote:
                    if not self._accept_hello(conn, frame, stream):
                        stats.bad_frames += 1
                        return
                    continue
                if frame.is_reply:
                    self._pending.resolve(frame)
                elif frame.is_request:
                    await conn.handlers.acquire()
                    tg.start_soon(self._answer, conn, frame)
                else:
                    assert self._handler is not None
                    await deliver_one_way(self._handler, frame, conn.remote, log)

    def _accept_hello(self, conn: _Conn, frame: Frame, stream: anyio.abc.SocketStream) -> bool:
        address = frame.header.get("address") if frame.type == HELLO else None
        if not isinstance(address, str) or not address:
            log.error(
                "closing connection from %s: expected a %r frame first, got %r",
                self._peer_name(stream),
                HELLO,
                frame.type,
            )
            return False
        conn.remote = address
        if not frame.header.get("listening", True):
            old = self._routes.get(address)
            self._routes[address] = conn
            if old is not None and old is not conn:
                old.sink.close()
        return True

    @staticmethod
    def _peer_name(stream: anyio.abc.SocketStream) -> str:
        try:
            remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
        except Exception:
            return "(unknown peer)"
        if isinstance(remote, tuple):
            return _format_address(str(remote[0]), int(remote[1]))
        return str(remote)

    async def _answer(self, conn: _Conn, frame: Frame) -> None:
        try:
            assert self._handler is not None
            reply = await answer(self._handler, frame, conn.remote, log)
            if len(reply) - 4 > self._max_frame:
                reply = await answer(_too_large_handler(len(reply)), frame, conn.remote, log)
            try:
                await conn.sink.send(reply)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                log.debug("reply to %r dropped: connection to %s closed", frame.type, conn.remote)
        finally:
            conn.handlers.release()


def _too_large_handler(size: int) -> FrameHandler:
    async def refuse(frame: Frame, sender: str) -> Frame:
        raise FrameTooLarge(f"reply to {frame.type!r} of {size} bytes exceeds the frame limit")

    return refuse
