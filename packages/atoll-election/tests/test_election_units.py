"""Unit tests of the pure election pieces: quorum, votes, timer, lease, transfer, no IO."""

from __future__ import annotations

import ast
import math
import pathlib
import random

import pytest

from atoll.election import (
    INFINITE_INDEX,
    ElectionTimer,
    JointConfig,
    LeadershipTransfer,
    LeaseTracker,
    MajorityConfig,
    VoteRequest,
    VoteResult,
    VoteTally,
    ignores_vote_request,
    log_up_to_date,
    may_grant_vote,
)


def test_majority_committed_index() -> None:
    c = MajorityConfig.of(["a", "b", "c"])
    assert c.quorum == 2
    assert c.committed_index({"a": 5, "b": 3, "c": 1}) == 3
    assert c.committed_index({"a": 5}) == 0
    assert MajorityConfig().committed_index({}) == INFINITE_INDEX


def test_joint_committed_index_is_the_min_of_both_halves() -> None:
    j = JointConfig.of(["a", "b", "c"], ["c", "d", "e"])
    acked = {"a": 9, "b": 9, "c": 4, "d": 2, "e": 1}
    assert j.committed_index(acked) == 2
    assert JointConfig.of(["a", "b", "c"]).committed_index(acked) == 9


def test_vote_results_simple_and_joint() -> None:
    c = MajorityConfig.of(["a", "b", "c"])
    assert c.vote_result({"a": True}) is VoteResult.PENDING
    assert c.vote_result({"a": True, "b": True}) is VoteResult.WON
    assert c.vote_result({"a": False, "b": False}) is VoteResult.LOST
    j = JointConfig.of(["a", "b", "c"], ["a", "d", "e"])
    assert j.vote_result({"a": True, "b": True}) is VoteResult.PENDING
    assert j.vote_result({"a": True, "b": True, "d": True}) is VoteResult.WON
    assert j.vote_result({"a": True, "b": True, "d": False, "e": False}) is VoteResult.LOST


def test_quorum_active() -> None:
    j = JointConfig.of(["a", "b", "c"])
    assert j.quorum_active(lambda n: n in {"a", "b"})
    assert not j.quorum_active(lambda n: n == "a")


def test_log_up_to_date() -> None:
    assert log_up_to_date(3, 1, 2, 100)
    assert not log_up_to_date(2, 100, 3, 1)
    assert log_up_to_date(2, 5, 2, 5)
    assert not log_up_to_date(2, 4, 2, 5)


def test_one_vote_per_term_and_pre_vote_relaxation() -> None:
    req = VoteRequest("b", 5, 2, 10)
    kw = {"term": 5, "last_term": 2, "last_index": 10}
    assert may_grant_vote(req, voted_for=None, leader=None, **kw)
    assert may_grant_vote(req, voted_for="b", leader=None, **kw)
    assert not may_grant_vote(req, voted_for="c", leader=None, **kw)
    assert not may_grant_vote(req, voted_for=None, leader="a", **kw)
    pre = VoteRequest("b", 6, 2, 10, pre_vote=True)
    assert may_grant_vote(pre, voted_for="c", leader="a", **kw)
    stale = VoteRequest("b", 6, 2, 9, pre_vote=True)
    assert not may_grant_vote(stale, voted_for=None, leader=None, **kw)


def test_leader_stickiness() -> None:
    kw = {"check_quorum": True, "election_ticks": 10}
    assert ignores_vote_request(leader="a", election_elapsed=3, forced=False, **kw)
    assert not ignores_vote_request(leader="a", election_elapsed=10, forced=False, **kw)
    assert not ignores_vote_request(leader="a", election_elapsed=3, forced=True, **kw)
    assert not ignores_vote_request(leader=None, election_elapsed=3, forced=False, **kw)
    assert ignores_vote_request(leader=None, election_elapsed=3, forced=False, booting=True, **kw)
    assert not ignores_vote_request(
        check_quorum=False, election_ticks=10, leader="a", election_elapsed=0, forced=False
    )


def test_vote_tally_counts_first_answers_only() -> None:
    t = VoteTally()
    t.record("a", True)
    t.record("b", False)
    t.record("b", True)
    assert t.counts() == (1, 1)
    assert t.result(JointConfig.of(["a", "b", "c"])) is VoteResult.PENDING


def test_timer_draws_from_base_to_twice_base_and_handicap_shifts_it() -> None:
    rng = random.Random(1)
    t = ElectionTimer(10, rng)
    seen = set()
    for _ in range(200):
        t.reset()
        seen.add(t.timeout)
    assert min(seen) == 10 and max(seen) == 19
    t.set_handicap(1)
    t.reset()
    assert 20 <= t.timeout < 30
    t.reset()
    fired = [t.tick() for _ in range(t.timeout)]
    assert fired[-1] and not any(fired[:-1])
    with pytest.raises(ValueError):
        ElectionTimer(0, rng)


def test_lease_needs_a_quorum_and_subtracts_drift() -> None:
    lease = LeaseTracker(duration=1.0, max_clock_drift=0.2)
    cfg = JointConfig.of(["a", "b", "c"])
    assert lease.expiry(cfg, "a", now=5.0) == -math.inf
    lease.record_ack("b", 4.0)
    assert lease.expiry(cfg, "a", now=5.0) == pytest.approx(4.8)
    assert lease.valid(cfg, "a", 4.7) and not lease.valid(cfg, "a", 4.8)
    lease.record_ack("b", 3.0)  # an older ack never shortens the lease
    assert lease.expiry(cfg, "a", now=5.0) == pytest.approx(4.8)
    lease.reset()
    assert not lease.valid(cfg, "a", 4.1)


def test_transfer_times_out() -> None:
    tr = LeadershipTransfer(3)
    tr.start("b")
    assert tr.active and not tr.tick() and not tr.tick()
    assert tr.tick() and not tr.active


CORE_MODULES = [
    *sorted((pathlib.Path(__file__).parents[1] / "src/atoll/election").glob("_*.py")),
    pathlib.Path(__file__).parents[2] / "atoll-replication/src/atoll/replication/_core.py",
]
FORBIDDEN = {"anyio", "asyncio", "time", "random", "socket", "threading", "trio"}


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_pure_cores_import_no_io(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def _reference_expiry(
    acks: dict[str, float], config: JointConfig, leader: str, now: float, eff: float
) -> float:
    start = config.quorum_time({**acks, leader: now})
    return -math.inf if start == -math.inf else start + eff


@pytest.mark.parametrize("seed", range(300))
def test_lease_expiry_matches_the_quorum_of_acknowledgements(seed: int) -> None:
    """The cached lease start gives what counting the acknowledgements (leader at
    ``now``) gives, through acks, config changes, leader changes and resets."""
    rng = random.Random(seed)
    nodes = ["a", "b", "c", "d", "e"]
    lease = LeaseTracker(duration=1.0, max_clock_drift=0.1)
    acks: dict[str, float] = {}
    now = 0.0

    def config() -> JointConfig:
        inc = rng.sample(nodes, rng.choice([1, 2, 3, 5]))
        out = rng.sample(nodes, rng.choice([0, 0, 1, 3]))
        return JointConfig.of(inc, out)

    cfg, leader = config(), rng.choice(nodes)
    for _ in range(60):
        now += rng.random() * 0.3
        r = rng.random()
        if r < 0.5:
            voter = rng.choice(nodes)
            sent = now - rng.random() * 0.5
            lease.record_ack(voter, sent)
            acks[voter] = max(acks.get(voter, -math.inf), sent)
        elif r < 0.6:
            cfg = config()
        elif r < 0.65:
            leader = rng.choice(nodes)
        elif r < 0.7:
            lease.reset()
            acks.clear()
        for _ in range(2):  # asked twice: the second answer comes from the cache
            want = _reference_expiry(acks, cfg, leader, now, lease.effective_duration)
            assert lease.expiry(cfg, leader, now) == want
            assert lease.valid(cfg, leader, now) == (now < want)
