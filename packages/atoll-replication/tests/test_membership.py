"""Learners, automatic promotion, single-voter changes and joint consensus."""

from __future__ import annotations

import pytest
from raft_harness import Net

from atoll.core import InvalidRequest, Unavailable
from atoll.replication import (
    ConfChange,
    ConfChangeOp,
    ConfChangeType,
    ConfState,
    Role,
    apply_conf_change,
    decode_conf_change,
    encode_conf_change,
)

ADD = ConfChangeType.ADD_VOTER
LEARN = ConfChangeType.ADD_LEARNER
AUTO = ConfChangeType.ADD_LEARNER_AUTO_PROMOTE
RM = ConfChangeType.REMOVE_NODE


def _cc(*ops: tuple[ConfChangeType, str], **kw: bool) -> ConfChange:
    return ConfChange(tuple(ConfChangeOp(t, n) for t, n in ops), **kw)


def _settle(net: Net, rounds: int = 10) -> None:
    for _ in range(rounds):
        net.tick("a")


def test_learner_replicates_without_voting_then_is_promoted_once_caught_up() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    for i in range(10):
        net.propose("a", f"k{i}=v".encode())
    net.add_peer("d")
    net.isolate("d")
    net["a"].propose_conf_change(_cc((AUTO, "d")))
    net.settle()
    cs = net["a"].conf_state
    assert "d" in cs.learners and "d" not in cs.voters
    # A learner that cannot keep up is not promoted and does not count for commit.
    _settle(net)
    assert "d" in net["a"].conf_state.learners
    t = net.propose("a", b"x=1")
    assert net["a"].commit_index >= t.index
    net.recover()
    _settle(net)
    assert "d" in net["a"].conf_state.voters, "caught-up learner was not promoted"
    assert net.peers["d"].kv.data == net.peers["a"].kv.data
    assert net["d"].conf_state.voters == {"a", "b", "c", "d"}


def test_plain_learner_is_never_promoted() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.add_peer("d")
    net["a"].propose_conf_change(_cc((LEARN, "d")))
    _settle(net)
    assert "d" in net["a"].conf_state.learners
    net.isolate("a")
    for _ in range(60):
        net["d"].tick()
        net.settle()
    assert net["d"].role is Role.FOLLOWER, "a learner never campaigns"


def test_joint_consensus_replaces_a_voter_and_leaves_automatically() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.add_peer("d")
    net["a"].propose_conf_change(_cc((RM, "c"), (ADD, "d")))
    _settle(net)
    hist = net.peers["a"].conf_history
    joint = [cs for cs in hist if cs.is_joint]
    assert (
        joint and joint[0].voters == {"a", "b", "d"} and joint[0].voters_outgoing == {"a", "b", "c"}
    )
    final = net["a"].conf_state
    assert not final.is_joint and final.voters == {"a", "b", "d"}
    t = net.propose("a", b"z=1")
    assert net["d"].log.term(t.index) == t.term


def test_joint_config_needs_both_majorities_to_commit() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.add_peer("d")
    net.add_peer("e")
    net.isolate("d")
    net.isolate("e")
    # old {a,b,c}, new {a,d,e}: the new half has only a.
    net["a"].propose_conf_change(_cc((RM, "b"), (RM, "c"), (ADD, "d"), (ADD, "e")))
    net.settle()
    assert net["a"].conf_state.is_joint, "entering joint needs the old majority only"
    t = net.propose("a", b"k=1")
    assert net["a"].commit_index < t.index, "committed without the new half's majority"
    net.recover()
    _settle(net, 20)
    assert net["a"].commit_index >= t.index
    assert net["a"].conf_state.voters == {"a", "d", "e"} and not net["a"].conf_state.is_joint


def test_removed_leader_steps_down_and_the_rest_elect() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net["a"].propose_conf_change(_cc((RM, "a")))
    _settle(net, 2)
    assert net["a"].role is Role.FOLLOWER
    for _ in range(40):
        net["b"].tick()
        net["c"].tick()
        net.settle()
        if net.leader() in ("b", "c"):
            break
    assert net.leader() in ("b", "c")


def test_one_membership_change_at_a_time() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.isolate("a")
    net["a"].propose_conf_change(_cc((LEARN, "d")))
    with pytest.raises(Unavailable):
        net["a"].propose_conf_change(_cc((LEARN, "e")))


def test_conf_change_rules() -> None:
    base = ConfState(voters=frozenset({"a", "b", "c"}))
    simple = apply_conf_change(base, _cc((ADD, "d")))
    assert simple.voters == {"a", "b", "c", "d"} and not simple.is_joint
    joint = apply_conf_change(base, _cc((ADD, "d"), (LEARN, "c")))
    assert joint.is_joint and joint.learners_next == {"c"} and joint.auto_leave
    left = apply_conf_change(joint, ConfChange(leave_joint=True))
    assert left.voters == {"a", "b", "d"} and left.learners == {"c"} and not left.is_joint
    with pytest.raises(InvalidRequest):
        apply_conf_change(joint, _cc((ADD, "e")))
    with pytest.raises(InvalidRequest):
        apply_conf_change(base, ConfChange(leave_joint=True))
    with pytest.raises(InvalidRequest):
        apply_conf_change(ConfState(voters=frozenset({"a"})), _cc((RM, "a")))
    cc = _cc((AUTO, "x"), (RM, "y"), joint=True)
    assert decode_conf_change(encode_conf_change(cc)) == cc
    with pytest.raises(InvalidRequest):
        decode_conf_change(b"not json")
