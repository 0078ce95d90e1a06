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


def test_acknowledged_appends_stand_in_for_heartbeats_and_renew_the_lease() -> None:
    """heartbeat_piggyback: a follower that acknowledged an append since the last
    periodic heartbeat gets none; the appends' stamps keep the lease alive; a follower
    that did not answer, and a heartbeat carrying a read index, are never skipped."""
    clock = VirtualClock()
    net = Net(
        ["a", "b", "c"],
        clock=clock,
        tick_seconds=0.1,
        max_clock_drift=0.05,
        heartbeat_piggyback=True,
    )
    net.elect("a")
    net.tick("a")  # heartbeat at t=0
    for step in range(1, 20):  # 1.9 s of writes, one append round per tick
        clock.advance_to(step * 0.1)
        net.propose("a", b"k=%d" % step)
        before = len(net.delivered)
        net.tick("a")
        hbs = [m for m in net.delivered[before:] if m.type is MT.HEARTBEAT]
        assert not hbs, f"heartbeats to followers that acknowledged appends: {hbs}"
    # The t=0 heartbeat's lease ended at 0.85 s: only the appends' acks renewed it.
    assert net["a"].lease_read_index() == net["a"].commit_index
    net.isolate("c")
    net.propose("a", b"k=late")  # c never answers
    delivered, dropped = len(net.delivered), len(net.dropped)
    net.tick("a")
    assert not [m for m in net.delivered[delivered:] if m.type is MT.HEARTBEAT]
    assert [m.dst for m in net.dropped[dropped:] if m.type is MT.HEARTBEAT] == ["c"]
    net.recover()
    net.propose("a", b"k=again")
    before = len(net.delivered)
    net["a"].read_index(b"ctx-1", lease=False)
    net.settle()
    sent = [m for m in net.delivered[before:] if m.type is MT.HEARTBEAT]
    assert sorted(m.dst for m in sent) == ["b", "c"] and all(m.context for m in sent)


def test_without_piggyback_every_follower_gets_every_heartbeat() -> None:
    clock = VirtualClock()
    net = _lease_net(clock)
    net.elect("a")
    net.propose("a", b"k=1")
    before = len(net.delivered)
    net.tick("a")
    assert sorted(m.dst for m in net.delivered[before:] if m.type is MT.HEARTBEAT) == ["b", "c"]
