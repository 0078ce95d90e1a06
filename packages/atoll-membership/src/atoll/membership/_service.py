"""The anyio shell around :class:`MembershipCore`: real time, real transport, hooks, metrics.

Owns: feeding the core (inbound frames, a ticker that sleeps until the core's next
wake-up, an event-loop lag sampler), carrying its output out (frames through the
``atoll.core.Transport``, events through the pluggy hook relay or a callback, metrics
through a registry), and the awaitable local requests (join, leave, metadata update).
Never: makes protocol decisions (the core does), blocks the event loop, or lets a bad
frame, a failed send or a hook error escape: a malformed or foreign message becomes a
log line and a counter.

The node's composition root owns the transport and dispatches every frame whose type
starts with :data:`FRAME_PREFIX` to :meth:`MembershipService.handle_frame`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus

from atoll.core import (
    AtollError,
    Clock,
    Frame,
    MemberInfo,
    MembershipEvent,
    MetricsRegistry,
    PeerUnreachable,
    Rng,
    SystemClock,
    Timeout,
    Transport,
    Unavailable,
    encode_frame,
    make_rng,
)

from ._config import MembershipConfig
from ._core import MembershipCore
from ._messages import MalformedGossip, Message, decode_message, encode_message
from ._metrics import MembershipMetrics

__all__ = ["FRAME_PREFIX", "MembershipService"]

FRAME_PREFIX = "swim."
"""Frames whose type starts with this belong to membership."""

log = logging.getLogger("atoll.membership")

EventCallback = Callable[[MembershipEvent], None]


class MembershipService:
    """One node's membership, running over ``transport``.

    :param transport: a started (or soon started) :class:`atoll.core.Transport`; this
        service only calls :meth:`~atoll.core.Transport.send`.
    :param local: this node's description; ``local.address`` must be the transport's.
    :param hook: a pluggy hook relay (``plugin_manager.hook``) to fire
        ``atoll_membership_changed``, ``atoll_node_suspected`` and ``atoll_node_dead``.
    :param on_event: a plain callback for each event (besides, or instead of, ``hook``).
    :param metrics: a registry to export ``atoll_membership_*`` metrics into.
    :param lag_sample_interval: how often the loop-lag sampler wakes up (seconds).
    """

    def __init__(
        self,
        transport: Transport,
        local: MemberInfo,
        config: MembershipConfig | None = None,
        *,
        hook: Any = None,
        on_event: EventCallback | None = None,
        metrics: MetricsRegistry | None = None,
        clock: Clock | None = None,
        rng: Rng | None = None,
        lag_sample_interval: float = 0.05,
        send_queue: int = 1024,
    ) -> None:
        self.transport = transport
        self.config = config or MembershipConfig.lan()
        self.clock = clock or SystemClock()
        self.core = MembershipCore(local, self.config, rng or make_rng(), self.clock.now())
        self._hook = hook
        self._on_event = on_event
        self._metrics = MembershipMetrics(metrics) if metrics is not None else None
        self._lag_interval = lag_sample_interval
        self._wake = anyio.Event()
        self._joined = anyio.Event()
        self._send_tx, self._send_rx = anyio.create_memory_object_stream[tuple[str, Frame]](
            send_queue
        )
        self.dropped: dict[str, int] = {}
        self.bytes_sent = 0
        self.frames_sent = 0

    # ------------------------------------------------------------------ views
    @property
    def local(self) -> MemberInfo:
        """This node as the cluster sees it."""
        return self.core.local

    def members(self) -> list[MemberInfo]:
        """Every member this node knows (itself included)."""
        return self.core.members()

    def member(self, node_id: str) -> MemberInfo | None:
        """This node's view of ``node_id``."""
        return self.core.member(node_id)

    # ------------------------------------------------------------------ running
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the ticker, the lag sampler and the sender until cancelled.

        Use with ``await task_group.start(service.run)``, after the transport started.
        A ``local`` given without an address (built before the transport knew its own)
        takes the transport's address here, before anything is gossiped.

        :raises ValueError: neither ``local`` nor the transport has an address.
        """
        if not self.core.local.address:
            address = self.transport.address
            if not address:
                raise ValueError(
                    "membership needs this node's address: local.address is empty and the "
                    "transport has none (start the transport before the membership service)"
                )
            self.core.update_metadata(self.clock.now(), address=address)
            self._flush()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._sender)
            tg.start_soon(self._lag_sampler)
            tg.start_soon(self._ticker)
            task_status.started()

    async def handle_frame(self, frame: Frame, sender: str) -> Frame | None:
        """Transport handler for ``swim.*`` frames. Never raises for bad input."""
        try:
            msg = decode_message(frame, self.config.cluster)
        except MalformedGossip as exc:
            self._drop(exc.code, f"dropped gossip from {sender}: {exc.message}")
            return None
        self._receive(sender, msg)
        return None

    def _receive(self, sender: str, msg: Message) -> None:
        self.core.receive(sender, msg, self.clock.now())
        self._flush()

    async def _ticker(self) -> None:
        while True:
            now = self.clock.now()
            self.core.tick(now)
            self._flush()
            # Our own flush set the event; only a later receive or request may wake us
            # early (otherwise this loop spins and a node burns a core doing nothing).
            self._wake = anyio.Event()
            nxt = self.core.next_wakeup()
            delay = 1.0 if nxt is None else max(0.0, nxt - self.clock.now())
            with anyio.move_on_after(delay):
                await self._wake.wait()

    async def _lag_sampler(self) -> None:
        # A stalled loop shows up as a sleep that returns late: the likeliest cause of a
        # false alarm in Python, so Lifeguard's local health listens to it.
        while True:
            due = self.clock.now() + self._lag_interval
            await anyio.sleep(self._lag_interval)
            self.core.observe_loop_lag(due, self.clock.now())

    async def _sender(self) -> None:
        timeout = self.config.detection.probe_timeout
        async with self._send_rx:
            async for address, frame in self._send_rx:
                try:
                    with anyio.fail_after(timeout):
                        await self.transport.send(address, frame)
                except (AtollError, TimeoutError, OSError) as exc:
                    self._drop("send_failed", f"gossip to {address} not sent: {exc!r}", debug=True)

    def _flush(self) -> None:
        out = self.core.take_output()
        cluster = self.config.cluster
        for address, msg in out.messages:
            frame = encode_message(msg, cluster)
            size = len(encode_frame(frame)) if self._metrics is not None else 0
            try:
                self._send_tx.send_nowait((address, frame))
            except anyio.WouldBlock:
                self._drop("send_queue_full", f"gossip to {address} dropped: send queue full")
                continue
            self.frames_sent += 1
            self.bytes_sent += size
            if self._metrics is not None:
                self._metrics.gossip_messages.inc()
                self._metrics.gossip_bytes.inc(size)
        for ev in out.events:
            self._publish(ev)
        if self.core.joined and not self._joined.is_set():
            self._joined.set()
        if self._metrics is not None:
            self._metrics.update(self.core)
        self._wake.set()

    def _publish(self, ev: MembershipEvent) -> None:
        try:
            if self._on_event is not None:
                self._on_event(ev)
            if self._hook is not None:
                self._hook.atoll_membership_changed(event=ev)
                m = ev.member
                if ev.kind == "suspect":
                    self._hook.atoll_node_suspected(node_id=m.node_id, incarnation=m.incarnation)
                elif ev.kind == "dead":
                    self._hook.atoll_node_dead(node_id=m.node_id, incarnation=m.incarnation)
        except Exception:
            log.exception("membership event handler failed for %s", ev)

    def _drop(self, reason: str, line: str, *, debug: bool = False) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if self._metrics is not None:
            self._metrics.dropped.labels(reason=reason).inc()
        (log.debug if debug else log.warning)(line)

    # ------------------------------------------------------------------ requests
    async def join(self, seeds: Sequence[str], *, timeout: float | None = None) -> None:
        """Join through ``seeds``; return once any seed answered.

        :raises PeerUnreachable: ``join_max_attempts`` attempts got no answer.
        :raises atoll.core.Timeout: ``timeout`` passed first.
        """
        self._joined = anyio.Event()
        self.core.join(seeds, self.clock.now())
        self._flush()
        with anyio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            while not self.core.joined:
                if self.core.join_failed:
                    raise PeerUnreachable(f"no seed of {list(seeds)} answered a join")
                with anyio.move_on_after(self.config.join_timeout):
                    await self._joined.wait()
        if scope.cancelled_caught:
            raise Timeout(f"join through {list(seeds)} did not finish within {timeout} s")

    async def leave(self, *, timeout: float = 5.0) -> None:
        """Leave gracefully; return once the leave has been gossiped (or ``timeout``)."""
        self.core.leave(self.clock.now())
        self._flush()
        with anyio.move_on_after(timeout):
            while not self.core.leave_spread:
                await anyio.sleep(self.config.gossip_interval)
        # Give the sender a moment to put the last frames on the wire.
        with anyio.move_on_after(min(timeout, 1.0)):
            while self._send_rx.statistics().current_buffer_used:
                await anyio.sleep(0.01)
        if not self.core.leave_spread:
            raise Unavailable("leave was not fully gossiped before the timeout")

    def update_metadata(self, **fields: Any) -> MemberInfo:
        """Change this node's metadata at runtime (zone, rack, host, tags, version, ...)."""
        info = self.core.update_metadata(self.clock.now(), **fields)
        self._flush()
        return info
