"""Replication rules on the full node: log matching, backtracking, commit, flow control,
proposals, leadership transfer, crash durability."""

from __future__ import annotations

from typing import Any

import pytest
from raft_harness import MT, Net, Peer, bootstrap

from atoll.core import NotLeader, Unavailable
from atoll.replication import Entry, HardState, Role


def _disk(voters: list[str], terms: list[int], hs_term: int) -> object:
    disk = bootstrap(voters)
    disk.append([Entry(i + 2, t, f"k{i}={t}".encode()) for i, t in enumerate(terms)])
    disk.set_hard_state(HardState(term=hs_term, commit=1))
    return disk


def test_fast_backtracking_skips_a_whole_divergent_term_in_one_round_trip() -> None:
    ids = ["a", "b", "c"]
    net = Net(ids, pre_vote=False, check_quorum=False, lease_reads=False)
    good = [1] * 10 + [3] * 20
    bad = [1] * 10 + [2] * 40  # b has 40 uncommitted entries of term 2
    for n, terms in (("a", good), ("b", bad), ("c", good)):
        net.peers[n] = Peer(
            n, _disk(ids, terms, 3), check_quorum=False, pre_vote=False, lease_reads=False
        )  # type: ignore[arg-type]
    net.elect("a")
    rejects = [m for m in net.delivered if m.type is MT.APP_RESP and m.src == "b" and m.reject]
    assert 1 <= len(rejects) <= 2, f"{len(rejects)} rejections: backtracking is not fast"
    la, lb = net["a"].log, net["b"].log
    assert lb.last_index() == la.last_index()
    assert all(la.term(i) == lb.term(i) for i in range(2, la.last_index() + 1))
    assert net.peers["b"].kv.data == net.peers["a"].kv.data


def test_follower_rejects_append_that_does_not_match_and_accepts_after_probe() -> None:
    net = Net(["a", "b"])
    net.elect("a")
    net.cut("a", "b")
    for i in range(5):
        net.propose("a", f"k={i}".encode())
    assert net["b"].log.last_index() == 2
    net.recover()
    net.tick("a", 2)
    assert net["b"].log.last_index() == net["a"].log.last_index()
    assert net.peers["b"].kv.data == {"k": "4"}


def test_commit_requires_a_current_term_entry_on_a_majority() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.isolate("b")
    net.isolate("c")
    t = net.propose("a", b"x=1")
    assert net["a"].commit_index < t.index, "committed without a majority"
    net.recover()
    net.tick("a", 1)
    assert net["a"].commit_index >= t.index


def test_proposals_of_one_round_are_batched_into_one_append() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    before = len(net.delivered)
    tickets = [net["a"].propose(f"k{i}=v".encode()) for i in range(20)]
    net.settle()
    apps = [m for m in net.delivered[before:] if m.type is MT.APP and m.dst == "b" and m.entries]
    assert len(apps) == 1 and len(apps[0].entries) == 20
    assert all(t is not None and net["b"].log.term(t.index) == t.term for t in tickets)


def test_inflight_window_limits_pipelined_appends() -> None:
    net = Net(["a", "b"], max_msg_bytes=1, max_inflight_msgs=3)
    net.elect("a")
    net.drop_types = {MT.APP_RESP}
    for i in range(10):
        net["a"].propose(f"k{i}=v".encode())
    before = len(net.delivered)
    net.settle()
    sent = [m for m in net.delivered[before:] if m.type is MT.APP and m.dst == "b"]
    assert len(sent) == 3, "the window holds at most max_inflight_msgs appends"
    net.recover()
    net.tick("a", 3)
    assert net["b"].log.last_index() == net["a"].log.last_index()


def test_uncommitted_bytes_cap_refuses_proposals() -> None:
    net = Net(["a", "b", "c"], max_uncommitted_bytes=100)
    net.elect("a")
    net.isolate("a")
    net["a"].propose(b"k=" + b"x" * 60)
    with pytest.raises(Unavailable):
        net["a"].propose(b"k=" + b"y" * 60)
    net.recover()
    net.tick("a")
    net["a"].propose(b"k=" + b"y" * 60)  # accepted once the first committed


def test_follower_forwards_proposals_or_raises_not_leader() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    assert net["b"].propose(b"f=1") is None
    net.settle()
    assert net.peers["a"].kv.data == {"f": "1"}
    net2 = Net(["a", "b", "c"], forward_proposals=False)
    net2.elect("a")
    net2.tick("a")
    with pytest.raises(NotLeader) as exc:
        net2["b"].propose(b"f=1")
    assert exc.value.leader_hint == "a"


def test_leadership_transfer_catches_the_target_up_then_hands_over() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.cut("a", "c")
    net.propose("a", b"k=1")
    net.recover()
    net["a"].transfer_leadership("c")
    with pytest.raises(Unavailable):
        net["a"].propose(b"k=2")
    net.settle()
    assert net["c"].role is Role.LEADER
    assert net["a"].role is Role.FOLLOWER and net["a"].leader_id == "c"
    assert any(m.type is MT.TIMEOUT_NOW for m in net.delivered)
    net.propose("c", b"k=3")
    assert net.peers["a"].kv.data == {"k": "3"}


def test_leadership_transfer_to_an_unreachable_target_is_abandoned() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net["a"].transfer_leadership("c")
    net.settle()
    with pytest.raises(Unavailable):
        net["a"].propose(b"k=1")
    net.tick("a", net["a"].config.election_ticks + 1)
    assert net["a"].role is Role.LEADER
    assert net["a"].propose(b"k=1") is not None


def test_election_priority_moves_leadership_to_the_preferred_node() -> None:
    net = Net(["a", "b", "c"], priorities={"c": 10})
    net.elect("a")
    for _ in range(3 * net["a"].config.election_ticks):
        net.tick_all()
    assert net.leader() == "c"


def test_crash_loses_unpersisted_entries_but_never_persisted_ones() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"k=1")
    durable = net["b"].log.last_index()
    # b takes a Ready with new entries but crashes before persisting it.
    net["a"].propose(b"k=2")
    rd = net["a"].ready()
    for m in rd.messages:
        net["b"].step(m) if m.dst == "b" else None
    rd_b = net["b"].ready()
    assert rd_b.entries and not any(m.type is MT.APP_RESP for m in rd_b.messages)
    assert any(m.type is MT.APP_RESP for m in rd_b.messages_after_persist)
    p = net.restart("b")
    assert p.raft.log.last_index() == durable
    net.peers["a"].handle(rd)
    net.tick("a", 2)
    assert net["b"].log.last_index() == net["a"].log.last_index()
    assert net.peers["b"].kv.data == {"k": "2"}


def test_ready_contract_rejects_misuse() -> None:
    net = Net(["a"])
    net["a"].campaign()
    rd = net["a"].ready()
    from atoll.core import InvalidRequest

    with pytest.raises(InvalidRequest):
        net["a"].ready()
    net.peers["a"].handle(rd)
    with pytest.raises(InvalidRequest):
        net["a"].advance(rd)


def test_without_commit_broadcast_followers_learn_the_commit_from_the_next_heartbeat() -> None:
    """commit_broadcast=False: an advanced commit index sends no empty appends; the
    followers learn it from the next heartbeat (or append), and nothing else changes."""
    for broadcast in (True, False):
        net = Net(["a", "b", "c"], commit_broadcast=broadcast)
        net.elect("a")
        net.tick_all(2)
        before = len(net.delivered)
        net.propose("a", b"k=1")
        index = net["a"].log.last_index()
        assert net["a"].commit_index == index, "the leader commits either way"
        apps = [m for m in net.delivered[before:] if m.type is MT.APP]
        empty = [m for m in apps if not m.entries]
        if broadcast:
            assert empty and net["b"].commit_index == index
        else:
            assert not empty, f"empty appends sent: {empty}"
            assert net["b"].commit_index < index
            net.tick("a")  # the heartbeat carries the commit index
            assert net["b"].commit_index == net["c"].commit_index == index


def test_without_commit_broadcast_a_broadcast_skips_followers_with_nothing_new() -> None:
    """The step path already sent b the new entries (right after b's response): the
    Ready broadcast that follows must not add an empty append to b."""
    net = Net(["a", "b", "c"], commit_broadcast=False, max_inflight_msgs=2)
    net.elect("a")
    net.tick_all(2)
    held: list[Any] = []
    net.hook = lambda m: (held.append(m), None)[1] if m.type is MT.APP_RESP and m.src == "b" else m
    net.propose("a", b"p1")  # b's answer is held
    assert held
    net.hook = None
    net["a"].propose(b"p2")  # queued for the next Ready's broadcast
    net["a"].step(held[-1])  # b's progress moves: the step path sends b p2 at once
    before = len(net.delivered)
    net.settle()
    to_b = [m for m in net.delivered[before:] if m.type is MT.APP and m.dst == "b"]
    assert to_b and all(m.entries for m in to_b), f"empty append to b: {to_b}"
    assert net["b"].log.last_index() == net["a"].log.last_index()
