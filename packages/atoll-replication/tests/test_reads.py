"""ReadIndex and lease reads."""

from __future__ import annotations

import pytest
from raft_harness import MT, Net

from atoll.core import NotLeader
from atoll.testing import VirtualClock


def test_read_index_waits_for_a_heartbeat_quorum() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"k=1")
    net.drop_types = {MT.HEARTBEAT_RESP}
    net["a"].read_index(b"r1")
    net.settle()
    assert net.peers["a"].read_states == [], "answered without confirming leadership"
    hb = [m for m in net.delivered if m.type is MT.HEARTBEAT and m.context == b"r1"]
    assert {m.dst for m in hb} == {"b", "c"}
    net.drop_types.clear()
    net.hook = lambda m: None if m.type is MT.HEARTBEAT_RESP and m.src == "c" else m
    net.tick("a")  # the next heartbeat carries the pending read; b's ack makes a quorum
    assert [(r.index, r.context) for r in net.peers["a"].read_states] == [
        (net["a"].commit_index, b"r1")
    ]


def test_read_index_is_deferred_until_the_leader_commits_in_its_term() -> None:
    net = Net(["a", "b", "c"])
    net.drop_types = {MT.APP_RESP}
    net.elect("a")
    net["a"].read_index(b"early")
    net.tick("a")
    assert net.peers["a"].read_states == []
    net.drop_types.clear()
    net.tick("a", 2)
    assert [r.context for r in net.peers["a"].read_states] == [b"early"]


def test_follower_read_index_goes_through_the_leader() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.tick("a")
    net["b"].read_index(b"fr")
    net.tick("a")
    assert [r.context for r in net.peers["b"].read_states] == [b"fr"]
    net2 = Net(["a", "b", "c"])
    with pytest.raises(NotLeader):
        net2["b"].read_index(b"x")


def _lease_net(clock: VirtualClock) -> Net:
    return Net(["a", "b", "c"], clock=clock, tick_seconds=0.1, max_clock_drift=0.05)


def test_lease_read_is_served_locally_within_the_lease() -> None:
    clock = VirtualClock()
    net = _lease_net(clock)
    net.elect("a")
    net.tick("a")  # heartbeat at t=0 acknowledged by b and c
    assert net["a"].lease_expiry() == pytest.approx(0.9 - 0.05)
    clock.advance_to(0.5)
    before = len(net.delivered)
    net["a"].read_index(b"lr", lease=True)
    net.settle()
    assert [r.context for r in net.peers["a"].read_states] == [b"lr"]
    assert not [m for m in net.delivered[before:] if m.type is MT.HEARTBEAT]


def test_lease_read_is_refused_after_the_lease_expires() -> None:
    clock = VirtualClock()
    net = _lease_net(clock)
    net.elect("a")
    net.tick("a")
    net.isolate("a")
    clock.advance_to(0.86)  # past 0.9 s minus the 0.05 s drift bound
    assert net["a"].lease_expiry() < clock.now()
    net["a"].read_index(b"late", lease=True)
    net.settle()
    assert net.peers["a"].read_states == [], "served from an expired lease"
    net.recover()
    net.tick("a")  # falls back to ReadIndex: confirmed by a heartbeat round
    assert [r.context for r in net.peers["a"].read_states] == [b"late"]


def test_lease_is_dropped_when_a_transfer_starts() -> None:
    clock = VirtualClock()
    net = _lease_net(clock)
    net.elect("a")
    net.tick("a")
    net.isolate("b")
    net["a"].transfer_leadership("b")
    assert net["a"].lease_expiry() == float("-inf")


def test_lease_read_index_is_the_synchronous_fast_path_of_a_lease_read() -> None:
    clock = VirtualClock()
    net = _lease_net(clock)
    net.elect("a")
    assert net["b"].lease_read_index() is None, "a follower holds no lease"
    net.tick("a")  # heartbeat at t=0 acknowledged by b and c
    clock.advance_to(0.5)
    before = len(net.delivered)
    assert net["a"].lease_read_index() == net["a"].commit_index
    assert not net["a"].has_ready(), "the fast path must not queue a ReadState"
    assert len(net.delivered) == before
    clock.advance_to(0.86)  # past the lease (0.9 s minus the 0.05 s drift bound)
    assert net["a"].lease_read_index() is None


def test_lease_read_index_is_none_while_the_group_sleeps() -> None:
    clock = VirtualClock()
    net = _lease_net(clock)
    net.elect("a")
    net.propose("a", b"k=1")
    net.tick("a", 3)
    assert net["a"].lease_read_index() is not None
    assert net["a"].maybe_quiesce()
    net.settle()
    assert net["a"].lease_read_index() is None, "a sleeping leader must wake first"
