"""The anyio shell over a small in-test transport: real event loop, real frames."""

from __future__ import annotations

from typing import Any

import anyio
import pluggy
import pytest

from atoll.core import (
    Frame,
    FrameHandler,
    InMemoryMetrics,
    MemberInfo,
    MembershipEvent,
    MemberState,
    PeerUnreachable,
    decode_frame,
    encode_frame,
    hookimpl,
    hookspecs,
    make_rng,
)
from atoll.detection import DetectionConfig
from atoll.membership import FRAME_PREFIX, MembershipConfig, MembershipService

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeNet:
    """Addresses -> handlers; every frame goes through the real codec."""

    def __init__(self) -> None:
        self.handlers: dict[str, FrameHandler] = {}
        self.down: set[str] = set()


class FakeTransport:
    """A minimal :class:`atoll.core.Transport` for tests: one-way sends, in process."""

    backend = "fake"

    def __init__(self, net: FakeNet, address: str) -> None:
        self.net = net
        self._address = address
        self.tg: Any = None

    @property
    def address(self) -> str:
        return self._address

    async def start(self, handler: FrameHandler) -> None:
        self.net.handlers[self._address] = handler

    async def send(self, address: str, frame: Frame) -> None:
        handler = self.net.handlers.get(address)
        if handler is None or address in self.net.down or self._address in self.net.down:
            return
        data = encode_frame(frame)
        await handler(decode_frame(data), self._address)

    async def request(self, address: str, frame: Frame, *, timeout: float) -> Frame:
        raise PeerUnreachable("the fake transport only sends one-way frames")

    async def close(self) -> None:
        self.net.handlers.pop(self._address, None)


class Recorder:
    """A plugin implementing the membership hooks."""

    def __init__(self) -> None:
        self.changed: list[MembershipEvent] = []
        self.suspected: list[str] = []
        self.dead: list[str] = []

    @hookimpl
    def atoll_membership_changed(self, event: MembershipEvent) -> None:
        self.changed.append(event)

    @hookimpl
    def atoll_node_suspected(self, node_id: str, incarnation: int) -> None:
        self.suspected.append(node_id)

    @hookimpl
    def atoll_node_dead(self, node_id: str, incarnation: int) -> None:
        self.dead.append(node_id)


def _config() -> MembershipConfig:
    det = DetectionConfig.local(probe_interval=0.1, probe_timeout=0.04, suspicion_mult=2)
    return MembershipConfig.local(detection=det, gossip_interval=0.05, push_pull_interval=2.0)


async def _node(net: FakeNet, name: str, **kw: Any) -> tuple[MembershipService, FakeTransport]:
    t = FakeTransport(net, name)
    svc = MembershipService(
        t,
        MemberInfo(node_id=name, address=name, zone="z1"),
        _config(),
        rng=make_rng(hash(name) & 0xFF),
        **kw,
    )

    async def handler(frame: Frame, sender: str) -> Frame | None:
        assert frame.type.startswith(FRAME_PREFIX)
        return await svc.handle_frame(frame, sender)

    await t.start(handler)
    return svc, t


def _hooks(recorder: Recorder) -> Any:
    pm = pluggy.PluginManager("atoll")
    pm.add_hookspecs(hookspecs)
    pm.register(recorder)
    return pm.hook


async def test_three_nodes_join_detect_a_crash_and_see_a_leave() -> None:
    net = FakeNet()
    pm = pluggy.PluginManager("atoll")
    pm.add_hookspecs(hookspecs)
    rec = Recorder()
    pm.register(rec)
    metrics = InMemoryMetrics()
    a, _ = await _node(net, "a", hook=pm.hook, metrics=metrics)
    b, _ = await _node(net, "b")
    rec_c, rec_d = Recorder(), Recorder()
    c, _ = await _node(net, "c", hook=_hooks(rec_c))
    d, _ = await _node(net, "d", hook=_hooks(rec_d))
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for svc in (a, b, c, d):
                await tg.start(svc.run)
            await a.join([])
            await b.join(["a"])
            await c.join(["b"])
            await d.join(["a"])
            while len([m for m in a.members() if m.state is MemberState.ALIVE]) < 4:
                await anyio.sleep(0.05)
            # b crashes: it stops answering. a hears of it through the hook.
            net.down.add("b")
            while "b" not in rec.dead:
                await anyio.sleep(0.05)
            # Whoever declared b dead suspected it first; a may only have heard the verdict
            # by gossip (SWIM spreads "dead" without every member seeing "suspect").
            assert "b" in rec.suspected + rec_c.suspected + rec_d.suspected
            # d leaves gracefully; a learns it before d stops.
            await d.leave(timeout=5)
            while (m := a.member("d")) is None or m.state is not MemberState.LEFT:
                await anyio.sleep(0.05)
            c.update_metadata(tags={"role": "hot"})
            while a.member("c").tags != {"role": "hot"}:  # type: ignore[union-attr]
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    kinds = {(e.kind, e.member.node_id) for e in rec.changed}
    assert {
        ("joined", "b"),
        ("joined", "c"),
        ("dead", "b"),
        ("left", "d"),
        ("updated", "c"),
    } <= kinds
    assert metrics.total("atoll_membership_probes_sent_total") > 0
    assert metrics.value("atoll_membership_members", state="dead") == 1
    assert metrics.total("atoll_membership_gossip_sent_bytes_total") > 0


async def test_malformed_and_foreign_frames_are_counted_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = FakeNet()
    metrics = InMemoryMetrics()
    a, _ = await _node(net, "a", metrics=metrics)
    await a.handle_frame(Frame("swim.ping", {"c": "atoll", "s": "x", "q": "NaN"}), "evil")
    await a.handle_frame(Frame("swim.ack", {"c": "other-cluster", "s": "x", "q": 1}), "evil")
    assert a.dropped == {"bad_gossip": 1, "foreign_gossip": 1}
    assert metrics.value("atoll_membership_messages_dropped_total", reason="bad_gossip") == 1
    assert "dropped gossip from evil" in caplog.text


async def test_join_with_no_live_seed_fails_cleanly() -> None:
    net = FakeNet()
    cfg = MembershipConfig.local(join_timeout=0.05, join_max_attempts=2)
    t = FakeTransport(net, "lonely")
    svc = MembershipService(t, MemberInfo(node_id="lonely", address="lonely"), cfg)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(svc.run)
            with pytest.raises(PeerUnreachable, match="no seed"):
                await svc.join(["nobody:1"])
            tg.cancel_scope.cancel()


async def test_an_address_unknown_at_construction_is_taken_from_the_started_transport() -> None:
    # atoll-node builds MemberInfo before its transport has bound a port: the address is
    # empty then, and gossip carrying it would be rejected by every peer.
    net = FakeNet()
    a, _ = await _node(net, "a")
    t = FakeTransport(net, "b")
    b = MembershipService(t, MemberInfo(node_id="b", address=""), _config())

    async def handler(frame: Frame, sender: str) -> Frame | None:
        return await b.handle_frame(frame, sender)

    await t.start(handler)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(a.run)
            await tg.start(b.run)
            assert b.local.address == "b"
            await b.join(["a"])
            while (m := a.member("b")) is None or m.address != "b":
                await anyio.sleep(0.05)
            assert a.dropped == {}
            tg.cancel_scope.cancel()


async def test_no_address_anywhere_is_a_clear_error() -> None:
    net = FakeNet()
    t = FakeTransport(net, "")
    svc = MembershipService(t, MemberInfo(node_id="x", address=""), _config())
    with pytest.raises(ValueError, match="start the transport before"):
        await svc.run()
