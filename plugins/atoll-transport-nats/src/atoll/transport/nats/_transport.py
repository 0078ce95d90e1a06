"""The NATS transport: Atoll frames as messages on per-node subjects of a NATS server.

Owns: one NATS connection per transport, the node's subject ``<prefix>.<node id>``,
a reply inbox subscription, the envelope naming each message's sender, chunking of
frames above the server's ``max_payload`` and their reassembly, request/reply pairing,
and reconnecting when the server restarts (nats-py's auto-reconnect).
Never: uses NATS request/reply helpers on the hot path (one-way frames are plain
publishes, per MACHINE-FACTS), or lets a bad message stop the subscription.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import anyio
import attrs

import nats.errors
from atoll.core import (
    ConfigError,
    Frame,
    FrameError,
    FrameHandler,
    FrameTooLarge,
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
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from . import _envelope as env

__all__ = ["NatsStats", "NatsTransport"]

log = logging.getLogger("atoll.transport.nats")

_NO_RESPONDER_RETRIES = 3

_BAD_SUBJECT_CHARS = set(" \t\r\n*>")


@attrs.define
class NatsStats:
    """Counters describing what a :class:`NatsTransport` has done (``statistics()``)."""

    frames_sent: int = 0
    frames_received: int = 0
    chunks_sent: int = 0
    chunks_received: int = 0
    frames_dropped: int = 0
    """One-way frames that could not be published (connection closed, buffer full)."""
    bad_messages: int = 0
    """Messages on our subjects that were not valid Atoll envelopes or frames."""
    reassembly_evicted: int = 0
    disconnects: int = 0
    reconnects: int = 0
    no_responder_retries: int = 0
    """Requests asked again after a "no responders" answer."""
    pending_requests: int = 0


def _check_subject(subject: str) -> None:
    tokens = subject.split(".")
    if not subject or any(not t for t in tokens) or _BAD_SUBJECT_CHARS & set(subject):
        raise ConfigError(
            f"NATS subject {subject!r} is not valid: expected dot-separated tokens without "
            "spaces or wildcards (check transport.subject_prefix and node.id)"
        )


class NatsTransport:
    """A :class:`atoll.core.Transport` over NATS.

    :param config: ``servers`` (URLs), ``subject_prefix``, ``connect_timeout``,
        ``max_frame_mb``, ``send_queue`` (messages a subscription buffers);
        ``options["reconnect_wait"]`` seconds between reconnect attempts (default 0.25),
        ``options["user"]``/``options["password"]``/``options["token"]`` credentials.
    :param node_id: the node's id; its address is ``<subject_prefix>.<node_id>``.
    :param client_only: a client transport: its subject gets a random suffix so many
        clients with the same id can coexist.
    """

    def __init__(
        self, config: TransportConfig | None = None, *, node_id: str, client_only: bool = False
    ) -> None:
        self._config = config or TransportConfig(backend="nats")
        if not self._config.servers:
            raise ConfigError("transport.servers = [] is not valid: expected NATS server URLs")
        prefix = self._config.subject_prefix
        if client_only:
            self._subject = f"{prefix}.client.{node_id}.{secrets.token_hex(4)}"
        else:
            self._subject = f"{prefix}.{node_id}"
        _check_subject(self._subject)
        self._sender = self._subject.encode()
        self._max_frame = self._config.max_frame_mb * 1024 * 1024
        opts = self._config.options
        self._reconnect_wait = float(opts.get("reconnect_wait", 0.25))
        self._nc: NatsClient | None = None
        self._inbox = ""
        self._handler: FrameHandler | None = None
        self._host = TaskHost(log)
        self._pending = PendingRequests()
        self._reassembler = env.Reassembler(
            max_frame_bytes=self._max_frame, budget_bytes=4 * self._max_frame
        )
        self._next_mid = 0
        self._stats = NatsStats()
        self._closed = False

    @property
    def backend(self) -> str:
        """Always ``"nats"``."""
        return "nats"

    @property
    def address(self) -> str:
        """This node's subject, ``<subject_prefix>.<node_id>``."""
        return self._subject

    def statistics(self) -> NatsStats:
        """A snapshot of this transport's counters."""
        self._stats.pending_requests = len(self._pending)
        self._stats.reassembly_evicted = self._reassembler.evicted
        return attrs.evolve(self._stats)

    async def start(self, handler: FrameHandler) -> None:
        """Connect, subscribe to our subject and reply inbox; returns once subscribed."""
        if self._closed:
            raise TransportClosed(f"nats transport {self._subject} is closed")
        if self._nc is not None:
            raise TransportError(f"nats transport {self._subject} is already started")
        self._handler = handler
        opts = self._config.options
        creds: dict[str, Any] = {k: opts[k] for k in ("user", "password", "token") if k in opts}
        nc = NatsClient()
        # nats-py retries the first connection forever when reconnects are unlimited; a
        # node must fail to start instead, naming the servers it could not reach.
        failure: BaseException | None = None
        with anyio.move_on_after(self._config.connect_timeout) as scope:
            try:
                await nc.connect(
                    servers=list(self._config.servers),
                    name=f"atoll:{self._subject}",
                    connect_timeout=max(1, round(self._config.connect_timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=self._reconnect_wait,  # type: ignore[arg-type]
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    **creds,
                )
            except (OSError, nats.errors.Error, TimeoutError) as exc:
                failure = exc
        if scope.cancelled_caught or failure is not None:
            why = failure or nc.last_error or "timed out"
            with anyio.CancelScope(shield=True):
                try:
                    await nc.close()
                except Exception:
                    pass
            raise PeerUnreachable(
                f"cannot connect to NATS at {', '.join(self._config.servers)} within "
                f"{self._config.connect_timeout}s: {why}"
            ) from failure
        self._nc = nc
        await self._host.start()
        self._inbox = f"_INBOX.atoll.{secrets.token_hex(8)}"
        limit = max(self._config.send_queue, 64) * 64
        try:
            await nc.subscribe(self._inbox + ".*", cb=self._on_reply, pending_msgs_limit=limit)
            await nc.subscribe(self._subject, cb=self._on_message, pending_msgs_limit=limit)
            await nc.flush(timeout=max(1, round(self._config.connect_timeout)))
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            await self.close()
            raise TransportError(f"cannot subscribe to {self._subject}: {exc}") from exc

    async def send(self, address: str, frame: Frame) -> None:
        """Publish a one-way frame on ``address`` (best-effort)."""
        nc = self._check_open()
        data = self._encode(frame)
        try:
            await self._publish(nc, address, data, reply="")
        except (nats.errors.Error, OSError) as exc:
            self._check_open()
            self._stats.frames_dropped += 1
            log.debug("dropped a %r frame to %s: %s", frame.type, address, exc)
            return
        self._stats.frames_sent += 1

    async def request(self, address: str, frame: Frame, *, timeout: float) -> Frame:
        """Publish ``frame`` with our inbox as reply subject and wait for the answer.

        A "no responders" answer is retried a few times within ``timeout``: a peer that
        is (re)connecting, or whose subscription the server has not propagated yet, is
        not yet a dead peer.

        :raises PeerUnreachable: still no subscriber on ``address`` (NATS "no responders").
        """
        deadline = anyio.current_time() + timeout
        delay = 0.02
        for attempt in range(_NO_RESPONDER_RETRIES + 1):
            try:
                return await self._request_once(
                    address, frame, timeout=max(0.0, deadline - anyio.current_time())
                )
            except PeerUnreachable as exc:
                if not exc.details.get("no_responders") or attempt == _NO_RESPONDER_RETRIES:
                    raise
                if anyio.current_time() + delay >= deadline:
                    raise
                self._stats.no_responder_retries += 1
                await anyio.sleep(delay)  # back-off before asking again (not a sync wait)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request_once(self, address: str, frame: Frame, *, timeout: float) -> Frame:
        nc = self._check_open()

        async def send(data: bytes, rid: int) -> None:
            try:
                await self._publish(nc, address, data, reply=f"{self._inbox}.{rid}")
            except (nats.errors.Error, OSError) as exc:
                self._check_open()
                raise PeerUnreachable(f"cannot publish to {address}: {exc}") from exc
            self._stats.frames_sent += 1

        return await self._pending.call(
            address, frame, timeout=timeout, encode=self._encode, send=send
        )

    async def close(self) -> None:
        """Fail pending requests, close the NATS connection and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending.fail_all(TransportClosed(f"nats transport {self._subject} closed"))
        nc, self._nc = self._nc, None
        if nc is not None:
            with anyio.move_on_after(self._config.connect_timeout, shield=True):
                try:
                    await nc.close()
                except Exception as exc:
                    log.debug("closing the NATS connection of %s: %s", self._subject, exc)
        await self._host.stop()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> NatsClient:
        if self._closed:
            raise TransportClosed(f"nats transport {self._subject} is closed")
        if self._nc is None:
            raise TransportError(f"nats transport {self._subject} is not started")
        return self._nc

    def _encode(self, frame: Frame) -> bytes:
        return encode_within(frame, self._config.max_frame_mb)

    async def _publish(self, nc: NatsClient, subject: str, data: bytes, *, reply: str) -> None:
        """Publish ``data`` in one message, or in chunks if it exceeds ``max_payload``."""
        sender = self._sender
        if len(data) + len(sender) + 3 <= nc.max_payload:
            await nc.publish(subject, env.encode_whole(sender, data), reply=reply)
            return
        room = nc.max_payload - env.chunk_overhead(sender)
        count = -(-len(data) // room)
        self._next_mid += 1
        mid = self._next_mid
        view = memoryview(data)
        for index in range(count):
            part = bytes(view[index * room : (index + 1) * room])
            info = (mid, index, count, len(data))
            await nc.publish(subject, env.encode_chunk(sender, info, part), reply=reply)
            self._stats.chunks_sent += 1

    def _open(self, payload: bytes) -> tuple[str, Frame] | None:
        """Decode one message into ``(sender, frame)``; None if it is an incomplete chunk."""
        _, sender, info, data = env.decode(payload)
        if info is None:
            return sender, decode_frame(bytes(data), max_frame_bytes=self._max_frame)
        self._stats.chunks_received += 1
        whole = self._reassembler.add(sender, info, data)
        if whole is None:
            return None
        return sender, decode_frame(whole, max_frame_bytes=self._max_frame)

    def _bad(self, msg: Msg, exc: Exception) -> None:
        self._stats.bad_messages += 1
        log.error("dropping a bad message on %s: %s", msg.subject, exc)

    async def _on_reply(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status") == "503" and not msg.data:
            rid_s = msg.subject.rsplit(".", 1)[-1]
            if rid_s.isdigit():
                self._pending.fail(
                    int(rid_s),
                    PeerUnreachable("no transport listens on it", no_responders=True),
                )
            return
        try:
            opened = self._open(msg.data)
        except FrameError as exc:
            self._bad(msg, exc)
            return
        if opened is None:
            return
        _, frame = opened
        self._stats.frames_received += 1
        if frame.is_reply:
            self._pending.resolve(frame)
        else:
            self._bad(msg, FrameError(f"{frame.type!r} on the reply inbox is not a reply"))

    async def _on_message(self, msg: Msg) -> None:
        try:
            opened = self._open(msg.data)
        except FrameError as exc:
            self._bad(msg, exc)
            return
        if opened is None:
            return
        sender, frame = opened
        self._stats.frames_received += 1
        handler = self._handler
        assert handler is not None
        if frame.is_request:
            if not msg.reply:
                self._bad(msg, FrameError(f"request {frame.type!r} has no reply subject"))
                return
            self._host.spawn(self._answer, handler, frame, sender, msg.reply)
        elif frame.is_reply:
            self._pending.resolve(frame)
        else:
            await deliver_one_way(handler, frame, sender, log)

    async def _answer(self, handler: FrameHandler, frame: Frame, sender: str, reply: str) -> None:
        data = await answer(handler, frame, sender, log)
        if len(data) - 4 > self._max_frame:
            data = await answer(_refuse_too_large(len(data)), frame, sender, log)
        nc = self._nc
        if nc is None or self._closed:
            return
        try:
            await self._publish(nc, reply, data, reply="")
        except (nats.errors.Error, OSError) as exc:
            log.debug("reply to %r for %s dropped: %s", frame.type, sender, exc)

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS connection of %s: %s", self._subject, exc or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        self._stats.disconnects += 1
        if not self._closed:
            log.warning("NATS connection of %s lost; reconnecting", self._subject)

    async def _on_reconnected(self) -> None:
        self._stats.reconnects += 1
        log.info("NATS connection of %s re-established", self._subject)


def _refuse_too_large(size: int) -> FrameHandler:
    async def refuse(frame: Frame, sender: str) -> Frame:
        raise FrameTooLarge(f"reply to {frame.type!r} of {size} bytes exceeds the frame limit")

    return refuse
