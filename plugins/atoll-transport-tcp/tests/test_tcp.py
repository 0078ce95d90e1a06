"""TCP-specific behaviour beyond the conformance suite."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import anyio
import pytest

from atoll.core import (
    FLAG_REQUEST,
    Frame,
    PeerUnreachable,
    Transport,
    TransportConfig,
    TransportError,
    encode_frame,
    make_plugin_manager,
    make_transport,
    parse_address,
    transport_backends,
)
from atoll.testing._transport_conformance import FrameRecorder, wait_until
from atoll.transport.tcp import HELLO, TcpTransport
from atoll.transport.tcp import _plugin as tcp_plugin

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _cfg(**kw: object) -> TransportConfig:
    return TransportConfig(backend="tcp", **kw)  # type: ignore[arg-type]


async def test_plugin_hooks_make_a_tcp_transport() -> None:
    pm = make_plugin_manager([tcp_plugin], load_entry_points=False)
    assert transport_backends(pm) == ["tcp"]
    t = make_transport(pm, _cfg(), "n1", "127.0.0.1:0")
    assert isinstance(t, TcpTransport) and isinstance(t, Transport)
    await t.start(FrameRecorder())
    try:
        host, port = parse_address(t.address)
        assert host == "127.0.0.1" and port > 0
    finally:
        await t.close()


async def test_listen_on_a_busy_port_is_a_clear_error() -> None:
    a = TcpTransport(_cfg(), listen="127.0.0.1:0")
    await a.start(FrameRecorder())
    try:
        b = TcpTransport(_cfg(), listen=a.address)
        with pytest.raises(TransportError, match=a.address):
            await b.start(FrameRecorder())
    finally:
        await a.close()


async def test_client_only_transport_gets_replies_and_pushes() -> None:
    rs, rc = FrameRecorder(), FrameRecorder()
    server = TcpTransport(_cfg(), node_id="s", listen="127.0.0.1:0")
    client = TcpTransport(_cfg(), node_id="c", listen="")
    await server.start(rs)
    await client.start(rc)
    try:
        with anyio.fail_after(10):
            assert client.address.startswith("client:c:")
            reply = await client.request(server.address, Frame("q"), timeout=5)
            assert reply.header["sender"] == client.address
            # The server reaches the client over the client's own connection.
            await server.send(client.address, Frame("push"))
            await wait_until(lambda: len(rc.frames) == 1, what="push to client")
            assert rc.frames[0] == (server.address, Frame("push"))
            back = await server.request(client.address, Frame("ask"), timeout=5)
            assert back.type == "echo"
            await client.close()
            await wait_until(
                lambda: (
                    server.statistics().inbound_connections == 1
                    and client.address not in server._routes
                ),
                what="server to forget the client",
            )
            with pytest.raises(PeerUnreachable):
                await server.request(client.address, Frame("ask"), timeout=5)
    finally:
        await server.close()
        await client.close()


async def test_request_in_flight_fails_promptly_when_peer_dies() -> None:
    rb = FrameRecorder()
    entered = anyio.Event()

    async def hang(frame: Frame, sender: str) -> Frame | None:
        entered.set()
        await anyio.sleep_forever()

    rb.on_request = hang
    a = TcpTransport(_cfg(), listen="127.0.0.1:0")
    b = TcpTransport(_cfg(), listen="127.0.0.1:0")
    await a.start(FrameRecorder())
    await b.start(rb)
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def ask() -> None:
                    # A long timeout: the error must come from the dropped connection.
                    with pytest.raises(PeerUnreachable, match="lost"):
                        await a.request(b.address, Frame("q"), timeout=60)

                tg.start_soon(ask)
                await entered.wait()
                await b.close()
    finally:
        await a.close()
        await b.close()


async def test_connection_without_hello_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    rb = FrameRecorder()
    b = TcpTransport(_cfg(), listen="127.0.0.1:0")
    await b.start(rb)
    try:
        host, port = parse_address(b.address)
        with anyio.fail_after(10):
            async with await anyio.connect_tcp(host, port) as s:
                await s.send(encode_frame(Frame("not-hello")))
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                    await s.receive()
        assert not rb.frames
        assert b.statistics().bad_frames == 1
        records = [r for r in caplog.records if r.name == "atoll.transport.tcp"]
        assert any(r.levelno == logging.ERROR and HELLO in r.getMessage() for r in records)
    finally:
        await b.close()


async def test_frame_split_across_many_tiny_writes_is_reassembled() -> None:
    rb = FrameRecorder()
    b = TcpTransport(_cfg(), listen="127.0.0.1:0")
    await b.start(rb)
    try:
        host, port = parse_address(b.address)
        data = encode_frame(Frame(HELLO, {"address": "x:1", "listening": True}))
        data += b"".join(encode_frame(Frame("f", {"i": i}, (b"v" * i,))) for i in range(50))
        with anyio.fail_after(10):
            async with await anyio.connect_tcp(host, port) as s:
                s.extra(anyio.abc.SocketAttribute.raw_socket).setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
                )
                for i in range(0, len(data), 7):
                    await s.send(data[i : i + 7])
                await wait_until(lambda: len(rb.frames) == 50, what="50 frames")
        assert [f.header["i"] for _, f in rb.frames] == list(range(50))
        assert all(s == "x:1" for s, _ in rb.frames)
    finally:
        await b.close()


async def test_full_queue_to_a_stalled_peer_applies_backpressure_then_drops() -> None:
    """A peer that accepts but never reads: queues fill, send waits, then drops."""
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(1)
    port = stalled.getsockname()[1]
    a = TcpTransport(_cfg(send_queue=4, options={"send_timeout": 0.05}), listen="")
    await a.start(FrameRecorder())
    try:
        payload = Frame("bulk", {}, (bytes(1024 * 1024),))
        with anyio.fail_after(30):
            while a.statistics().frames_dropped == 0:
                await a.send(f"127.0.0.1:{port}", payload)
        stats = a.statistics()
        # Bounded: only the queue, one batch and the socket buffers hold frames.
        assert stats.frames_dropped >= 1
    finally:
        await a.close()
        stalled.close()


async def test_reconnects_after_the_peer_restarts_on_the_same_port() -> None:
    a = TcpTransport(_cfg(), listen="127.0.0.1:0")
    rb = FrameRecorder()
    b = TcpTransport(_cfg(), listen="127.0.0.1:0")
    await a.start(FrameRecorder())
    await b.start(rb)
    address = b.address
    try:
        with anyio.fail_after(20):
            await a.send(address, Frame("one"))
            await wait_until(lambda: len(rb.frames) == 1, what="first frame")
            await b.close()
            for _ in range(20):  # sends to a dead peer are dropped, never raised
                await a.send(address, Frame("lost"))
            rb2 = FrameRecorder()
            b = TcpTransport(_cfg(), listen=address)
            await b.start(rb2)
            while not rb2.frames:
                await a.send(address, Frame("two"))
                await anyio.sleep(0.01)
            assert a.statistics().connects >= 2
    finally:
        await a.close()
        await b.close()


def test_rejects_a_bad_listen_address() -> None:
    from atoll.core import ConfigError

    with pytest.raises(ConfigError, match="listen"):
        TcpTransport(_cfg(), listen="nonsense")


async def test_bad_peer_address_is_unreachable() -> None:
    a = TcpTransport(_cfg(), listen="")
    await a.start(FrameRecorder())
    try:
        with pytest.raises(PeerUnreachable, match="host:port"):
            await a.request("no-port-here", Frame("q"), timeout=1)
        await a.send("no-port-here", Frame("q"))
    finally:
        await a.close()


def test_hello_is_a_valid_frame() -> None:
    raw = encode_frame(Frame(HELLO, {"address": "h:1", "listening": False}))
    assert struct.unpack(">I", raw[:4])[0] == len(raw) - 4


async def test_requests_arriving_in_one_read_start_one_loop_turn_apart() -> None:
    """A batch of requests read at once does not start as one burst: what the first
    one's handler schedules (the Raft host's cycle, say) runs before the next starts."""
    events: list[tuple[str, int]] = []

    async def handler(frame: Frame, sender: str) -> Frame | None:
        i = frame.header["i"]
        events.append(("start", i))
        asyncio.get_running_loop().call_soon(events.append, ("scheduled", i))
        return Frame("ok")

    b = TcpTransport(_cfg(), listen="127.0.0.1:0")
    await b.start(handler)
    try:
        host, port = parse_address(b.address)
        data = encode_frame(Frame(HELLO, {"address": "x:1", "listening": True}))
        data += b"".join(
            encode_frame(Frame("q", {"i": i}, request_id=i + 1, flags=FLAG_REQUEST))
            for i in range(3)
        )
        with anyio.fail_after(10):
            async with await anyio.connect_tcp(host, port) as s:
                await s.send(data)  # one write: one read on the other side
                await wait_until(lambda: len(events) == 6, what="3 requests handled")
        assert events == [
            ("start", 0),
            ("scheduled", 0),
            ("start", 1),
            ("scheduled", 1),
            ("start", 2),
            ("scheduled", 2),
        ]
    finally:
        await b.close()


async def test_small_frames_coalesce_and_a_big_one_leaves_at_once() -> None:
    rb = FrameRecorder()
    a = TcpTransport(_cfg(), node_id="a", listen="127.0.0.1:0")
    b = TcpTransport(_cfg(), node_id="b", listen="127.0.0.1:0")
    await a.start(FrameRecorder())
    await b.start(rb)
    try:
        with anyio.fail_after(10):
            await a.request(b.address, Frame("warm-up"), timeout=5)  # connected
            writes = a.statistics().writes
            await a.send(b.address, Frame("small", {}, (b"x" * 100,)))
            await a.send(b.address, Frame("small", {}, (b"x" * 100,)))
            assert a.statistics().writes == writes  # queued for the end of the iteration
            await a.send(b.address, Frame("big", {}, (b"x" * 32 * 1024,)))
            assert a.statistics().writes == writes + 1  # all three left in one write, now
            await wait_until(lambda: len(rb.frames) == 3, what="3 frames")
            assert [f.type for _, f in rb.frames] == ["small", "small", "big"]
    finally:
        await a.close()
        await b.close()
