"""Election rules on the full node: pre-vote, check-quorum, leader stickiness, Figure 8."""

from __future__ import annotations

from raft_harness import MT, Net

from atoll.replication import Role


def test_single_node_elects_itself_and_commits() -> None:
    net = Net(["a"])
    net.elect("a")
    t = net.propose("a", b"x=1")
    assert t is not None
    assert net.peers["a"].kv.data == {"x": "1"}


def test_randomized_timeout_elects_exactly_one_leader() -> None:
    net = Net(["a", "b", "c"])
    for _ in range(40):
        net.tick_all()
        if net.leader() is not None:
            break
    leaders = [n for n, p in net.peers.items() if p.raft.role is Role.LEADER]
    assert len(leaders) == 1
    term = net[leaders[0]].term
    assert all(net[n].leader_id == leaders[0] and net[n].term == term for n in net.peers)


def test_pre_vote_stops_a_rejoining_node_from_disrupting_the_leader() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    term = net["a"].term
    net.isolate("c")
    net.tick("c", 100)  # c times out over and over while cut off
    assert net["c"].term == term, "pre-vote must not bump the term of an isolated node"
    net.propose("a", b"k=1")
    net.recover()
    net.tick("c", 30)  # c is back and campaigns: b and a are in the leader's lease
    assert net["a"].role is Role.LEADER and net["a"].term == term
    net.tick("a")
    assert net["c"].leader_id == "a"


def test_without_pre_vote_a_rejoining_node_does_disrupt() -> None:
    net = Net(["a", "b", "c"], pre_vote=False, check_quorum=False, lease_reads=False)
    net.elect("a")
    term = net["a"].term
    net.isolate("c")
    net.tick("c", 100)
    assert net["c"].term > term
    net.recover()
    net.tick("c", 30)
    assert net["a"].term > term, "the old leader was forced into a new term"


def test_check_quorum_steps_down_a_partitioned_leader() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.isolate("a")
    net.tick("a", net["a"].config.election_ticks * 2 + 1)
    assert net["a"].role is Role.FOLLOWER
    assert net["a"].leader_id is None


def test_without_check_quorum_a_partitioned_leader_stays() -> None:
    net = Net(["a", "b", "c"], check_quorum=False, lease_reads=False)
    net.elect("a")
    net.isolate("a")
    net.tick("a", 50)
    assert net["a"].role is Role.LEADER


def test_vote_denied_to_a_candidate_with_a_stale_log() -> None:
    net = Net(["a", "b", "c"], pre_vote=False, check_quorum=False, lease_reads=False)
    net.elect("a")
    net.cut("a", "c")
    net.propose("a", b"k=1")  # b has it, c does not
    net.isolate("a")
    net["c"].campaign()
    net.settle()
    assert net["c"].role is not Role.LEADER
    rejections = [
        m for m in net.delivered if m.type is MT.VOTE_RESP and m.src == "b" and m.dst == "c"
    ]
    assert rejections and all(m.reject for m in rejections)
    net.elect("b")


def test_figure_8_old_term_entries_are_not_committed_by_counting() -> None:
    """Raft paper, Figure 8: an entry from an earlier term stored on a majority may
    still be overwritten, so a leader commits only by counting current-term entries."""
    ids = ["s1", "s2", "s3", "s4", "s5"]
    net = Net(ids, pre_vote=False, check_quorum=False, lease_reads=False, max_msg_bytes=1)
    net.elect("s1")  # term 1, no-op at index 2 everywhere
    # (a) s1 replicates X (index 3, term 1) to s2 only, then is cut off.
    for n in ("s3", "s4", "s5"):
        net.cut("s1", n)
    net.propose("s1", b"x=old")
    assert net["s2"].log.last_index() == 3
    net.isolate("s1")
    net.restart("s1")  # s1 crashes (X is on its disk) and comes back as a follower
    # (b) s5 wins term 2 with s3, s4 and appends entries nobody else receives.
    net.drop_types = {MT.APP}
    net.elect("s5")
    net["s5"].propose(b"y=s5")
    net.settle()
    net.recover()
    net.isolate("s5")
    net.isolate("s1")
    for n in ("s2", "s3", "s4"):
        net.cut_links -= {("s1", n), (n, "s1")}
    # (c) s1 is leader again (term 3+) and replicates X to s3 - X is now on a majority
    # (s1, s2, s3) - but no entry of its own term reaches anyone.
    net.hook = lambda m: (
        m.replace(entries=tuple(e for e in m.entries if e.term == 1)) if m.type is MT.APP else m
    )
    net["s1"].campaign()
    net.settle()
    if net["s1"].role is not Role.LEADER:
        net["s1"].campaign()
        net.settle()
    assert net["s1"].role is Role.LEADER
    assert [net[n].log.term(3) for n in ("s2", "s3", "s4")] == [1, 1, 1], "X on a majority"
    assert net["s1"].commit_index < 3, "X must not be committed by counting replicas"
    assert not any(e.index == 3 for e in net.peers["s1"].applied)
    # (d) s1 crashes; s5 (whose log ends in term 2) is elected and overwrites X.
    net.recover()
    net.isolate("s1")
    net.restart("s5")  # still leads stale term 2 in its own mind; a restart ends that
    net["s5"].campaign()
    net.settle()
    if net["s5"].role is not Role.LEADER:
        net["s5"].campaign()
        net.settle()
    assert net["s5"].role is Role.LEADER
    net.propose("s5", b"z=1")
    for n in ("s2", "s3", "s4", "s5"):
        assert net[n].log.term(3) == 2, f"{n} still holds the uncommitted X"
    # Nobody ever applied X, and when s1 returns its X is replaced too.
    net.recover()
    net.tick("s5", 3)
    for p in net.peers.values():
        assert all(e.data != b"x=old" for e in p.applied)
        assert p.kv.data.get("x") is None
    assert net["s1"].log.term(3) == 2


def test_figure_8_current_term_entry_commits_the_old_one() -> None:
    net = Net(["a", "b", "c"], pre_vote=False, check_quorum=False, lease_reads=False)
    net.elect("a")
    net.cut("a", "c")
    net.cut("a", "b")
    net.propose("a", b"x=1")  # only on a
    net.recover()
    net.restart("a")  # back as a follower, x on its disk, never committed
    assert net["a"].commit_index < 3
    net.elect("a")  # a new term: its no-op, once on a majority, commits x as well
    assert net["a"].commit_index >= 4
    assert net.peers["b"].kv.data == {"x": "1"}
