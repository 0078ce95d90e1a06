"""NATS-specific behaviour: server restarts, raw junk, chunking, plugin wiring."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator

import anyio
import pytest
from nats.aio.client import Client as NatsClient

from atoll.core import (
    ConfigError,
    Frame,
    FrameError,
    FrameTooLarge,
    PeerUnreachable,
    Timeout,
    Transport,
    TransportConfig,
    make_plugin_manager,
    make_transport,
    transport_backends,
)
from atoll.testing._nats import NatsServer
from atoll.testing._transport_conformance import FrameRecorder, wait_until
from atoll.transport.nats import NatsTransport
from atoll.transport.nats import _envelope as env
from atoll.transport.nats import _plugin as nats_plugin

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _cfg(server: NatsServer, prefix: str, **kw: object) -> TransportConfig:
    return TransportConfig(
        backend="nats",
        servers=[server.url],
        subject_prefix=prefix,
        options={"reconnect_wait": 0.05},
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def pair(
    running_nats_server: NatsServer,
) -> AsyncIterator[tuple[NatsTransport, NatsTransport, FrameRecorder]]:
    prefix = f"t{secrets.token_hex(4)}"
    rb = FrameRecorder()
    a = NatsTransport(_cfg(running_nats_server, prefix), node_id="a")
    b = NatsTransport(_cfg(running_nats_server, prefix), node_id="b")
    await a.start(FrameRecorder())
    await b.start(rb)
    yield a, b, rb
    await a.close()
    await b.close()


async def _raw_publish(server: NatsServer, subject: str, *payloads: bytes) -> None:
    nc = NatsClient()
    await nc.connect(servers=[server.url])
    try:
        for p in payloads:
            await nc.publish(subject, p)
        await nc.flush()
    finally:
        await nc.close()


async def test_plugin_hooks(running_nats_server: NatsServer) -> None:
    pm = make_plugin_manager([nats_plugin], load_entry_points=False)
    assert transport_backends(pm) == ["nats"]
    cfg = _cfg(running_nats_server, "atollplug")
    node = make_transport(pm, cfg, "n1", "127.0.0.1:7401")
    client = make_transport(pm, cfg, "n1", "")
    assert isinstance(node, NatsTransport) and isinstance(node, Transport)
    assert node.address == "atollplug.n1"
    assert client.address.startswith("atollplug.client.n1.")
    await node.start(FrameRecorder())
    await client.start(FrameRecorder())
    try:
        assert (await client.request(node.address, Frame("q"), timeout=5)).type == "echo"
    finally:
        await client.close()
        await node.close()


def test_bad_subject_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="subject"):
        NatsTransport(TransportConfig(backend="nats"), node_id="has space")
    with pytest.raises(ConfigError, match="subject"):
        NatsTransport(TransportConfig(backend="nats", subject_prefix="a.*"), node_id="n1")


async def test_no_server_is_unreachable_at_start() -> None:
    dead = NatsServer()  # never started: its port is free
    t = NatsTransport(
        TransportConfig(backend="nats", servers=[dead.url], connect_timeout=1), node_id="x"
    )
    with pytest.raises(PeerUnreachable, match="cannot connect"):
        await t.start(FrameRecorder())
    dead.close()


async def test_survives_a_server_restart(
    running_nats_server: NatsServer,
    pair: tuple[NatsTransport, NatsTransport, FrameRecorder],
) -> None:
    a, b, rb = pair
    with anyio.fail_after(30):
        assert (await a.request(b.address, Frame("q"), timeout=5)).type == "echo"
        running_nats_server.restart()
        reply: Frame | None = None
        while reply is None:
            try:
                reply = await a.request(b.address, Frame("q", {"back": 1}), timeout=0.5)
            except (Timeout, PeerUnreachable):
                await anyio.sleep(0.02)
        assert reply.header["back"] == 1
        while not rb.of_type("after-restart"):
            await a.send(b.address, Frame("after-restart"))
            await anyio.sleep(0.01)
    assert a.statistics().reconnects >= 1 and b.statistics().reconnects >= 1


async def test_raw_junk_is_logged_counted_and_dropped(
    running_nats_server: NatsServer,
    pair: tuple[NatsTransport, NatsTransport, FrameRecorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, rb = pair
    oversized_chunk = env.encode_chunk(b"evil", (1, 0, 2, 1 << 30), b"x")
    stray_chunk = env.encode_chunk(b"evil", (2, 1, 2, 10), b"x")
    with anyio.fail_after(20):
        await _raw_publish(
            running_nats_server,
            b.address,
            b"",
            b"junk",
            b"\xa1\x00\x00",
            oversized_chunk,
            stray_chunk,
        )
        await wait_until(lambda: b.statistics().bad_messages == 5, what="5 bad messages")
        assert (await a.request(b.address, Frame("q"), timeout=5)).type == "echo"
    assert not rb.frames
    errors = [r for r in caplog.records if r.name == "atoll.transport.nats"]
    assert len([r for r in errors if r.levelno == logging.ERROR]) >= 5


async def test_big_frames_are_chunked(
    pair: tuple[NatsTransport, NatsTransport, FrameRecorder],
) -> None:
    a, b, _ = pair
    big = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    with anyio.fail_after(20):
        reply = await a.request(b.address, Frame("big", {}, (big,)), timeout=10)
    assert reply.attachments == (big,)
    assert a.statistics().chunks_sent >= 3 and b.statistics().chunks_sent >= 3
    assert b.statistics().chunks_received >= 3


def test_reassembler_rejects_inconsistent_chunks() -> None:
    r = env.Reassembler(max_frame_bytes=100, budget_bytes=1000)
    assert r.add("s", (1, 0, 2, 6), memoryview(b"abc")) is None
    assert r.add("s", (1, 1, 2, 6), memoryview(b"def")) == b"abcdef"
    with pytest.raises(FrameError, match="came first"):
        r.add("s", (2, 1, 2, 6), memoryview(b"abc"))
    r.add("s", (3, 0, 3, 9), memoryview(b"abc"))
    with pytest.raises(FrameError, match="out of order"):
        r.add("s", (3, 2, 3, 9), memoryview(b"ghi"))
    with pytest.raises(FrameTooLarge):
        r.add("s", (4, 0, 2, 200), memoryview(b"abc"))
    assert r.pending == 0


def test_reassembler_evicts_beyond_its_budget() -> None:
    r = env.Reassembler(max_frame_bytes=10_000, budget_bytes=100)
    for mid in range(5):
        r.add(f"s{mid}", (mid, 0, 2, 120), memoryview(bytes(60)))
    assert r.pending <= 2 and r.evicted >= 3
