"""Memory-transport behaviour beyond the conformance suite: faults, plugin wiring."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from atoll.core import (
    ConfigError,
    Frame,
    PeerUnreachable,
    Timeout,
    Transport,
    TransportConfig,
    TransportError,
    make_plugin_manager,
    make_transport,
    transport_backends,
)
from atoll.testing import LinkFaults
from atoll.testing._transport_conformance import FrameRecorder, wait_until
from atoll.transport.memory import MemoryNetwork, MemoryTransport, default_memory_network
from atoll.transport.memory import _plugin as memory_plugin

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def net() -> AsyncIterator[MemoryNetwork]:
    network = MemoryNetwork(seed=42)
    yield network
    for address in network.addresses:
        network.unregister(address)


async def _node(net: MemoryNetwork, name: str, rec: FrameRecorder | None = None) -> MemoryTransport:
    t = MemoryTransport(net, name)
    await t.start(rec or FrameRecorder())
    return t


async def test_plugin_uses_the_network_from_options_or_the_default() -> None:
    pm = make_plugin_manager([memory_plugin], load_entry_points=False)
    assert transport_backends(pm) == ["memory"]
    mine = MemoryNetwork()
    cfg = TransportConfig(backend="memory", options={"network": mine})
    t = make_transport(pm, cfg, "n1", "127.0.0.1:7401")
    assert isinstance(t, MemoryTransport) and isinstance(t, Transport)
    assert t.network is mine and t.address == "127.0.0.1:7401"
    d = make_transport(pm, TransportConfig(backend="memory"), "n9", "")
    assert isinstance(d, MemoryTransport)
    assert d.network is default_memory_network() and d.address == "n9"
    with pytest.raises(ConfigError, match="MemoryNetwork"):
        make_transport(pm, TransportConfig(backend="memory", options={"network": 1}), "x", "")


async def test_address_in_use_is_refused(net: MemoryNetwork) -> None:
    a = await _node(net, "a")
    try:
        with pytest.raises(TransportError, match="in use"):
            await _node(net, "a")
    finally:
        await a.close()


async def test_partition_and_heal(net: MemoryNetwork) -> None:
    rb = FrameRecorder()
    a, b, c = await _node(net, "a"), await _node(net, "b", rb), await _node(net, "c")
    try:
        net.partition([["a"], ["b", "c"]])
        with pytest.raises(Timeout):
            await a.request("b", Frame("q"), timeout=0.1)
        await a.send("b", Frame("lost"))
        assert (await c.request("b", Frame("q"), timeout=5)).type == "echo"
        net.heal()
        assert (await a.request("b", Frame("q"), timeout=5)).type == "echo"
        net.isolate("b")
        with pytest.raises(Timeout):
            await c.request("b", Frame("q"), timeout=0.1)
        net.heal()
        assert (await c.request("b", Frame("q"), timeout=5)).type == "echo"
        assert not rb.frames
        assert net.stats.dropped >= 3
    finally:
        for t in (a, b, c):
            await t.close()


async def test_drop_and_duplicate_faults(net: MemoryNetwork) -> None:
    rb = FrameRecorder()
    a, b = await _node(net, "a"), await _node(net, "b", rb)
    try:
        net.set_link("a", "b", LinkFaults(drop=1.0, delay=(0.0, 0.0)))
        for i in range(20):
            await a.send("b", Frame("x", {"i": i}))
        net.set_link("a", "b", LinkFaults(duplicate=1.0, delay=(0.0, 0.0)))
        await a.send("b", Frame("twice"))
        await wait_until(lambda: len(rb.frames) == 2, what="duplicated frame")
        assert [f.type for _, f in rb.frames] == ["twice", "twice"]
    finally:
        await a.close()
        await b.close()


async def test_delay_keeps_link_order_and_reorder_breaks_it(net: MemoryNetwork) -> None:
    rb = FrameRecorder()
    a, b = await _node(net, "a"), await _node(net, "b", rb)
    try:
        net.set_link("a", "b", LinkFaults(delay=(0.0, 0.01)))
        for i in range(200):
            await a.send("b", Frame("x", {"i": i}))
        await wait_until(lambda: len(rb.frames) == 200, what="200 delayed frames")
        assert [f.header["i"] for _, f in rb.frames] == list(range(200))
        rb.frames.clear()
        net.set_link("a", "b", LinkFaults(delay=(0.0, 0.0), reorder=0.5, reorder_delay=0.02))
        for i in range(200):
            await a.send("b", Frame("x", {"i": i}))
        await wait_until(lambda: len(rb.frames) == 200, what="200 reordered frames")
        got = [f.header["i"] for _, f in rb.frames]
        assert sorted(got) == list(range(200)) and got != list(range(200))
        # Requests still complete through a delayed link.
        net.set_link("a", "b", LinkFaults(delay=(0.001, 0.005)))
        assert (await a.request("b", Frame("q"), timeout=5)).type == "echo"
    finally:
        await a.close()
        await b.close()


async def test_request_in_flight_fails_promptly_when_peer_leaves(net: MemoryNetwork) -> None:
    rb = FrameRecorder()
    entered = anyio.Event()

    async def hang(frame: Frame, sender: str) -> Frame | None:
        entered.set()
        await anyio.sleep_forever()
        return None  # pragma: no cover

    rb.on_request = hang
    a, b = await _node(net, "a"), await _node(net, "b", rb)
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def ask() -> None:
                    with pytest.raises(PeerUnreachable, match="left"):
                        await a.request("b", Frame("q"), timeout=60)

                tg.start_soon(ask)
                await entered.wait()
                await b.close()
    finally:
        await a.close()
        await b.close()


async def test_full_inbox_exerts_backpressure_then_drops(net: MemoryNetwork) -> None:
    rb = FrameRecorder()
    gate = anyio.Event()

    async def slow(frame: Frame, sender: str) -> Frame | None:
        rb.frames.append((sender, frame))
        await gate.wait()
        return None

    cfg = TransportConfig(backend="memory", send_queue=4, options={"send_timeout": 0.05})
    a = MemoryTransport(net, "a", cfg)
    b = MemoryTransport(net, "b", cfg)
    await a.start(FrameRecorder())
    await b.start(slow)
    try:
        with anyio.fail_after(10):
            while a.statistics().frames_dropped == 0:
                await a.send("b", Frame("x"))
            assert a.statistics().frames_sent <= 4 + 1
            gate.set()
            await wait_until(lambda: len(rb.frames) == a.statistics().frames_sent, what="drain")
    finally:
        gate.set()
        await a.close()
        await b.close()
