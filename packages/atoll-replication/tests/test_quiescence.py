"""Quiescence: idle groups stop ticking and heartbeating; anything wakes them."""

from __future__ import annotations

from raft_harness import Net

from atoll.replication import QUIESCE_CONTEXT, MessageType, Role


def _idle_leader() -> Net:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"k=1")
    net.tick_all(3)  # heartbeats settle every follower's match and commit
    return net


def test_an_idle_group_goes_quiet_and_sends_nothing() -> None:
    net = _idle_leader()
    assert net["a"].maybe_quiesce()
    net.settle()
    assert all(net[n].quiesced for n in "abc")
    sent = len(net.delivered)
    net.tick_all(100)  # 10 election timeouts
    assert len(net.delivered) == sent  # no heartbeats, no elections
    assert net["a"].role is Role.LEADER and net["b"].leader_id == "a"


def test_not_quiescable_while_a_follower_lags_or_work_is_pending() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.cut("a", "c")
    net.propose("a", b"k=1")  # c does not have it
    net.tick("a", 2)
    assert not net["a"].maybe_quiesce()
    net.recover()
    net.tick_all(3)
    net["a"].read_index(b"r1")  # a pending read
    assert not net["a"].maybe_quiesce()
    net.tick_all(2)
    assert net["a"].maybe_quiesce()


def test_a_proposal_wakes_the_group_and_commits() -> None:
    net = _idle_leader()
    net["a"].maybe_quiesce()
    net.settle()
    net.propose("a", b"k=2")
    assert not net["a"].quiesced
    net.tick_all(2)
    assert all(not net[n].quiesced for n in "abc")
    assert net["b"].commit_index == net["a"].commit_index == net["a"].log.last_index()


def test_followers_wake_when_told_the_leader_is_dead_and_elect_a_new_one() -> None:
    net = _idle_leader()
    net["a"].maybe_quiesce()
    net.settle()
    net.isolate("a")  # the leader crashes while the group sleeps
    net.tick_all(100)
    assert net["b"].role is Role.FOLLOWER and net["b"].quiesced  # nobody noticed
    for n in "bc":  # the failure detector declares a dead: the shell wakes its groups
        net[n].unquiesce()
    net.tick_all(4 * net["b"].config.election_ticks)
    assert net.leader() in ("b", "c")


def test_a_lost_quiesce_heartbeat_leaves_that_follower_awake_but_harmless() -> None:
    net = _idle_leader()
    net.hook = lambda m: (
        None
        if m.type is MessageType.HEARTBEAT and m.context == QUIESCE_CONTEXT and m.dst == "c"
        else m
    )
    net["a"].maybe_quiesce()
    net.settle()
    net.hook = None
    assert net["b"].quiesced and not net["c"].quiesced
    term = net["a"].term
    net.tick_all(60)
    # c's timer fires; its pre-vote wakes the leader, which reasserts itself: no new term.
    assert net["a"].role is Role.LEADER and net["a"].term == term
