"""The transport conformance suite: every transport backend runs it against itself.

Owns: the behaviour any :class:`atoll.core.Transport` must show (delivery, per-sender
order, request/reply, error round trips, timeouts, unreachable peers, concurrency, large
frames, peer restarts, hostile input, close semantics), written once.
Never: knows a particular backend; everything backend-specific goes through the
:class:`TransportHarness` a backend's tests supply.

Use (the trio ``check_two_way_stream`` idea)::

    class MyHarness(TransportHarness):
        async def create(self, name): ...
        async def recreate(self, old, name): ...
        def dead_address(self): ...
        async def inject_raw(self, target, data): ...

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        async def harness(self):
            h = MyHarness()
            yield h
            await h.aclose()
"""

from __future__ import annotations

import abc
import logging
import struct
from collections.abc import Awaitable, Callable

import anyio
import pytest

from atoll.core import (
    AtollError,
    Frame,
    FrameTooLarge,
    InvalidRequest,
    NotLeader,
    PeerUnreachable,
    StaleEpoch,
    Timeout,
    Transport,
    TransportClosed,
    TransportError,
    Unavailable,
)

__all__ = ["FrameRecorder", "TransportConformance", "TransportHarness", "wait_until"]

MiB = 1024 * 1024
_SUITE_DEADLINE = 20.0


async def wait_until(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it holds; fail the test if ``timeout`` passes first."""
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)
        return
    if not predicate():
        pytest.fail(f"timed out after {timeout}s waiting for {what}")


class FrameRecorder:
    """A frame handler that records one-way frames and answers requests.

    By default a request is echoed back as an ``echo`` frame with the same header (plus
    ``"sender"``) and attachments; set :attr:`on_request` to answer differently.
    """

    def __init__(self) -> None:
        self.frames: list[tuple[str, Frame]] = []
        self.requests: list[tuple[str, Frame]] = []
        self.on_request: Callable[[Frame, str], Awaitable[Frame | None]] | None = None

    async def __call__(self, frame: Frame, sender: str) -> Frame | None:
        if not frame.is_request:
            self.frames.append((sender, frame))
            return None
        self.requests.append((sender, frame))
        if self.on_request is not None:
            return await self.on_request(frame, sender)
        return Frame("echo", {**frame.header, "sender": sender}, frame.attachments)

    def of_type(self, ftype: str) -> list[tuple[str, Frame]]:
        """Recorded one-way frames of one type, in arrival order."""
        return [(s, f) for s, f in self.frames if f.type == ftype]


class TransportHarness(abc.ABC):
    """What a backend supplies so the conformance suite can exercise it.

    Transports the harness creates must use a frame limit of :attr:`max_frame_bytes`
    (16 MiB: 8 MiB frames pass, a 17 MiB frame is refused).
    """

    max_frame_bytes: int = 16 * MiB

    def __init__(self) -> None:
        self._made: list[Transport] = []

    @abc.abstractmethod
    async def create(self, name: str) -> Transport:
        """A new, unstarted transport for node ``name`` (unique within a test)."""

    @abc.abstractmethod
    async def recreate(self, old: Transport, name: str) -> Transport:
        """A new, unstarted transport that will be reachable at ``old.address``.

        ``old`` is already closed: this simulates the peer's process restarting.
        """

    @abc.abstractmethod
    def dead_address(self) -> str:
        """An address in this backend's format where nobody is listening."""

    @abc.abstractmethod
    async def inject_raw(self, target: Transport, data: bytes) -> None:
        """Deliver ``data`` to ``target`` as a misbehaving peer would.

        ``data`` is in the Atoll stream format (u32 length prefix, then the body) but is
        malformed or declares a length above the frame limit. For a connection-oriented
        backend, open a connection, write ``data`` and return once ``target`` has closed
        that connection (fail the test if it never does).
        """

    async def start(self, name: str, handler: FrameRecorder | None = None) -> Transport:
        """Create and start a transport for ``name``; it is closed by :meth:`aclose`."""
        t = await self.create(name)
        await t.start(handler or FrameRecorder())
        self._made.append(t)
        return t

    async def restart(self, old: Transport, name: str, handler: FrameRecorder) -> Transport:
        """Close ``old`` and start a replacement at the same address."""
        await old.close()
        t = await self.recreate(old, name)
        await t.start(handler)
        self._made.append(t)
        return t

    async def aclose(self) -> None:
        """Close every transport this harness started."""
        for t in self._made:
            with anyio.CancelScope(shield=True):
                await t.close()
        self._made.clear()


def _garbage() -> bytes:
    body = b"\x01" + struct.pack(">I", 7) + b"notjson"
    return struct.pack(">I", len(body)) + body


def _oversized(limit: int) -> bytes:
    return struct.pack(">I", limit + 1) + b"\x01" + bytes(64)


def _transport_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("atoll.transport") and r.levelno >= logging.ERROR
    ]


@pytest.mark.anyio
class TransportConformance:
    """Base class of a backend's conformance tests; subclasses provide a ``harness`` fixture."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    # ------------------------------------------------------------------ basics

    async def test_started_transport_has_address_and_backend(
        self, harness: TransportHarness
    ) -> None:
        a = await harness.start("a")
        b = await harness.start("b")
        assert isinstance(a, Transport)
        assert a.backend and isinstance(a.backend, str)
        assert a.address and b.address and a.address != b.address

    async def test_one_way_delivery_carries_sender_and_attachments(
        self, harness: TransportHarness
    ) -> None:
        rb = FrameRecorder()
        a = await harness.start("a")
        b = await harness.start("b", rb)
        with anyio.fail_after(_SUITE_DEADLINE):
            await a.send(b.address, Frame("hello", {"n": 1, "s": "x"}, (b"k", b"", b"\x00\xff")))
            await wait_until(lambda: len(rb.frames) == 1, what="one-way frame")
        sender, frame = rb.frames[0]
        assert sender == a.address
        assert frame.type == "hello"
        assert frame.header == {"n": 1, "s": "x"}
        assert frame.attachments == (b"k", b"", b"\x00\xff")
        assert not frame.is_request

    async def test_receiver_can_answer_the_sender_address(self, harness: TransportHarness) -> None:
        ra, rb = FrameRecorder(), FrameRecorder()
        a = await harness.start("a", ra)
        b = await harness.start("b", rb)
        with anyio.fail_after(_SUITE_DEADLINE):
            await a.send(b.address, Frame("ping"))
            await wait_until(lambda: len(rb.frames) == 1, what="ping")
            await b.send(rb.frames[0][0], Frame("pong"))
            await wait_until(lambda: len(ra.frames) == 1, what="pong")
        assert ra.frames[0] == (b.address, Frame("pong"))

    async def test_frames_from_one_sender_arrive_in_order(self, harness: TransportHarness) -> None:
        rb = FrameRecorder()
        a = await harness.start("a")
        c = await harness.start("c")
        b = await harness.start("b", rb)
        n = 1000

        async def blast(t: Transport) -> None:
            for i in range(n):
                await t.send(b.address, Frame("seq", {"i": i}))

        with anyio.fail_after(_SUITE_DEADLINE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(blast, a)
                tg.start_soon(blast, c)
            await wait_until(lambda: len(rb.frames) == 2 * n, what=f"{2 * n} frames")
        for t in (a, c):
            seen = [f.header["i"] for s, f in rb.frames if s == t.address]
            assert seen == list(range(n))

    # ------------------------------------------------------------------ request/reply

    async def test_request_reply(self, harness: TransportHarness) -> None:
        a = await harness.start("a")
        b = await harness.start("b")
        with anyio.fail_after(_SUITE_DEADLINE):
            reply = await a.request(b.address, Frame("q", {"x": 1}, (b"v",)), timeout=5)
        assert reply.type == "echo"
        assert reply.header == {"x": 1, "sender": a.address}
        assert reply.attachments == (b"v",)
        assert reply.is_reply and not reply.is_error

    async def test_handler_returning_none_replies_ok(self, harness: TransportHarness) -> None:
        rb = FrameRecorder()

        async def nothing(frame: Frame, sender: str) -> Frame | None:
            return None

        rb.on_request = nothing
        a = await harness.start("a")
        b = await harness.start("b", rb)
        with anyio.fail_after(_SUITE_DEADLINE):
            reply = await a.request(b.address, Frame("q"), timeout=5)
        assert reply.type == "ok"
        assert reply.header == {} and reply.attachments == ()

    async def test_error_replies_round_trip(self, harness: TransportHarness) -> None:
        rb = FrameRecorder()
        errors: dict[str, AtollError] = {
            "not_leader": NotLeader(leader_hint="n3"),
            "stale": StaleEpoch(epoch=7),
            "unavailable": Unavailable("no quorum", group=12),
            "invalid": InvalidRequest("empty key"),
        }

        async def fail(frame: Frame, sender: str) -> Frame | None:
            raise errors[frame.header["kind"]]

        rb.on_request = fail
        a = await harness.start("a")
        b = await harness.start("b", rb)
        with anyio.fail_after(_SUITE_DEADLINE):
            with pytest.raises(NotLeader) as nl:
                await a.request(b.address, Frame("q", {"kind": "not_leader"}), timeout=5)
            assert nl.value.leader_hint == "n3"
            with pytest.raises(StaleEpoch) as se:
                await a.request(b.address, Frame("q", {"kind": "stale"}), timeout=5)
            assert se.value.epoch == 7
            with pytest.raises(Unavailable) as un:
                await a.request(b.address, Frame("q", {"kind": "unavailable"}), timeout=5)
            assert un.value.message == "no quorum" and un.value.details == {"group": 12}
            with pytest.raises(InvalidRequest, match="empty key"):
                await a.request(b.address, Frame("q", {"kind": "invalid"}), timeout=5)

    async def test_handler_crash_is_a_generic_error_and_server_keeps_serving(
        self, harness: TransportHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        rb = FrameRecorder()

        async def crash(frame: Frame, sender: str) -> Frame | None:
            if frame.header.get("crash"):
                raise ValueError("secret internals")
            return Frame("fine")

        rb.on_request = crash
        a = await harness.start("a")
        b = await harness.start("b", rb)
        with anyio.fail_after(_SUITE_DEADLINE):
            with pytest.raises(AtollError) as err:
                await a.request(b.address, Frame("q", {"crash": True}), timeout=5)
            assert type(err.value) is AtollError
            assert "secret internals" not in str(err.value)
            assert (await a.request(b.address, Frame("q"), timeout=5)).type == "fine"
            # A crashing one-way handler is logged too, and does not stop delivery.
            await a.send(b.address, Frame("after"))
            await wait_until(lambda: len(rb.frames) == 1, what="frame after crash")
        assert _transport_errors(caplog), "a crashing handler must be logged"

    async def test_timeout_when_peer_does_not_answer(self, harness: TransportHarness) -> None:
        rb = FrameRecorder()
        release = anyio.Event()

        async def hang(frame: Frame, sender: str) -> Frame | None:
            await release.wait()
            return None

        rb.on_request = hang
        a = await harness.start("a")
        b = await harness.start("b", rb)
        try:
            with anyio.fail_after(_SUITE_DEADLINE), pytest.raises(Timeout):
                await a.request(b.address, Frame("slow"), timeout=0.3)
        finally:
            release.set()
        with anyio.fail_after(_SUITE_DEADLINE):
            assert (await a.request(b.address, Frame("q"), timeout=5)).type == "ok"

    async def test_dead_address_is_unreachable(self, harness: TransportHarness) -> None:
        a = await harness.start("a")
        dead = harness.dead_address()
        with anyio.fail_after(_SUITE_DEADLINE):
            await a.send(dead, Frame("lost"))  # best-effort: no error
            with pytest.raises(PeerUnreachable):
                await a.request(dead, Frame("q"), timeout=10)

    async def test_many_requests_in_flight(self, harness: TransportHarness) -> None:
        n = 96
        rb = FrameRecorder()
        arrived = 0
        everyone = anyio.Event()

        async def barrier(frame: Frame, sender: str) -> Frame | None:
            nonlocal arrived
            arrived += 1
            if arrived == n:
                everyone.set()
            await everyone.wait()
            return Frame("r", {"i": frame.header["i"]})

        rb.on_request = barrier
        a = await harness.start("a")
        b = await harness.start("b", rb)
        results: dict[int, int] = {}

        async def one(i: int) -> None:
            results[i] = (await a.request(b.address, Frame("q", {"i": i}), timeout=15)).header["i"]

        with anyio.fail_after(_SUITE_DEADLINE):
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
        assert results == {i: i for i in range(n)}

    async def test_large_frames_with_attachments(self, harness: TransportHarness) -> None:
        rb = FrameRecorder()
        a = await harness.start("a")
        b = await harness.start("b", rb)
        big = bytes(range(256)) * (8 * MiB // 256)
        atts = (big, b"", b"key", big[: MiB + 3])
        with anyio.fail_after(_SUITE_DEADLINE):
            reply = await a.request(b.address, Frame("big", {"k": 1}, atts), timeout=15)
            assert reply.attachments == atts
            await a.send(b.address, Frame("big1", {}, atts))
            await a.send(b.address, Frame("small"))
            await wait_until(lambda: len(rb.frames) == 2, what="large one-way frame")
        assert rb.frames[0][1].attachments == atts
        assert rb.frames[1][1].type == "small"

    async def test_frame_above_the_limit_is_refused_locally(
        self, harness: TransportHarness
    ) -> None:
        a = await harness.start("a")
        b = await harness.start("b")
        huge = Frame("huge", {}, (bytes(harness.max_frame_bytes + 1),))
        with anyio.fail_after(_SUITE_DEADLINE):
            with pytest.raises(FrameTooLarge):
                await a.request(b.address, huge, timeout=5)
            with pytest.raises(FrameTooLarge):
                await a.send(b.address, huge)
            assert (await a.request(b.address, Frame("q"), timeout=5)).type == "echo"

    # ------------------------------------------------------------------ failures

    async def test_peer_restart_then_traffic_resumes(self, harness: TransportHarness) -> None:
        a = await harness.start("a")
        rb = FrameRecorder()
        b = await harness.start("b", rb)
        with anyio.fail_after(_SUITE_DEADLINE):
            assert (await a.request(b.address, Frame("q"), timeout=5)).type == "echo"
            address = b.address
            await b.close()
            with pytest.raises((PeerUnreachable, Timeout)):
                await a.request(address, Frame("q"), timeout=1.0)
            rb2 = FrameRecorder()
            b2 = await harness.restart(b, "b", rb2)
            assert b2.address == address
            reply: Frame | None = None
            while reply is None:
                try:
                    reply = await a.request(address, Frame("q", {"again": 1}), timeout=1.0)
                except (PeerUnreachable, Timeout):
                    await anyio.sleep(0.02)
            assert reply.header == {"again": 1, "sender": a.address}
            while not rb2.frames:
                await a.send(address, Frame("one-way"))
                await anyio.sleep(0.01)
        assert rb2.frames[0][0] == a.address

    async def test_request_in_flight_when_peer_dies_fails(self, harness: TransportHarness) -> None:
        rb = FrameRecorder()
        entered = anyio.Event()

        async def hang(frame: Frame, sender: str) -> Frame | None:
            entered.set()
            await anyio.sleep_forever()
            return None  # pragma: no cover - never reached

        rb.on_request = hang
        a = await harness.start("a")
        b = await harness.start("b", rb)
        caught: list[BaseException] = []

        async def ask() -> None:
            try:
                await a.request(b.address, Frame("q"), timeout=1.0)
            except TransportError as exc:
                caught.append(exc)
            except Timeout as exc:
                caught.append(exc)

        with anyio.fail_after(_SUITE_DEADLINE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                await entered.wait()
                await b.close()
        assert len(caught) == 1 and isinstance(caught[0], PeerUnreachable | Timeout)

    async def _check_hostile_input(
        self, harness: TransportHarness, caplog: pytest.LogCaptureFixture, data: bytes
    ) -> None:
        ra, rb = FrameRecorder(), FrameRecorder()
        a = await harness.start("a", ra)
        b = await harness.start("b", rb)
        with anyio.fail_after(_SUITE_DEADLINE):
            assert (await a.request(b.address, Frame("q"), timeout=5)).type == "echo"
            await harness.inject_raw(b, data)
            await wait_until(lambda: bool(_transport_errors(caplog)), what="a logged error")
            # The node keeps serving: old peers, new peers, and in both directions.
            assert (await a.request(b.address, Frame("q"), timeout=5)).type == "echo"
            assert (await b.request(a.address, Frame("q"), timeout=5)).type == "echo"
            c = await harness.start("c")
            assert (await c.request(b.address, Frame("q"), timeout=5)).type == "echo"
            await c.send(b.address, Frame("still-there"))
            await wait_until(lambda: bool(rb.of_type("still-there")), what="frame after garbage")
        assert not rb.frames[:-1], "garbage must not reach the handler"

    async def test_garbage_drops_the_connection_not_the_node(
        self, harness: TransportHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        await self._check_hostile_input(harness, caplog, _garbage())

    async def test_oversized_frame_drops_the_connection_not_the_node(
        self, harness: TransportHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        await self._check_hostile_input(harness, caplog, _oversized(harness.max_frame_bytes))

    # ------------------------------------------------------------------ close

    async def test_close_fails_pending_requests_and_is_idempotent(
        self, harness: TransportHarness
    ) -> None:
        rb = FrameRecorder()
        entered = anyio.Event()
        release = anyio.Event()

        async def hang(frame: Frame, sender: str) -> Frame | None:
            entered.set()
            await release.wait()
            return None

        rb.on_request = hang
        a = await harness.start("a")
        b = await harness.start("b", rb)
        caught: list[BaseException] = []

        async def ask() -> None:
            try:
                await a.request(b.address, Frame("q"), timeout=15)
            except TransportClosed as exc:
                caught.append(exc)

        try:
            with anyio.fail_after(_SUITE_DEADLINE):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask)
                    await entered.wait()
                    await a.close()
                await a.close()
        finally:
            release.set()
        assert len(caught) == 1

    async def test_use_after_close_raises_transport_closed(self, harness: TransportHarness) -> None:
        a = await harness.start("a")
        b = await harness.start("b")
        await a.close()
        with anyio.fail_after(_SUITE_DEADLINE):
            with pytest.raises(TransportClosed):
                await a.send(b.address, Frame("x"))
            with pytest.raises(TransportClosed):
                await a.request(b.address, Frame("x"), timeout=1)
            await a.close()
            # The peer is unaffected by its neighbour closing.
            c = await harness.start("c")
            assert (await c.request(b.address, Frame("q"), timeout=5)).type == "echo"
