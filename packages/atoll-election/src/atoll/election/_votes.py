"""The Raft vote rules: when a node may grant a (pre-)vote, and tallying an election.

Owns: the log up-to-dateness rule (Raft paper 5.4.1), the "one vote per term" rule, the
pre-vote relaxation (thesis 9.6), the leader-stickiness rule that makes check-quorum and
leases sound (thesis 6.2, 9.6), and the per-election vote tally.
Never: mutates node state or sends messages; the node core acts on the answers.
"""

from __future__ import annotations

import attrs

from ._quorum import JointConfig, VoteResult

__all__ = [
    "VoteRequest",
    "VoteTally",
    "ignores_vote_request",
    "log_up_to_date",
    "may_grant_vote",
]


def log_up_to_date(
    candidate_last_term: int, candidate_last_index: int, last_term: int, last_index: int
) -> bool:
    """Whether a candidate's log is at least as up to date as ours (Raft 5.4.1).

    The later last term wins; with equal last terms, the longer log wins.
    """
    if candidate_last_term != last_term:
        return candidate_last_term > last_term
    return candidate_last_index >= last_index


@attrs.frozen(slots=True)
class VoteRequest:
    """What a voter needs to know about a (pre-)vote request."""

    candidate: str
    term: int
    """The term the candidate campaigns for (for a pre-vote: the term it *would* use)."""
    last_term: int
    last_index: int
    pre_vote: bool = False


def may_grant_vote(
    request: VoteRequest,
    *,
    term: int,
    voted_for: str | None,
    leader: str | None,
    last_term: int,
    last_index: int,
) -> bool:
    """Whether to grant ``request``, given our (already term-updated) state.

    A real vote is granted at most once per term: to a candidate we already voted for
    (a retransmitted request), or to anyone if we have neither voted nor seen a leader
    this term. A pre-vote for a *future* term changes nothing, so it may be granted
    whenever the candidate's log is up to date. Either way the log rule applies.
    """
    can_vote = (
        voted_for == request.candidate
        or (voted_for is None and leader is None)
        or (request.pre_vote and request.term > term)
    )
    return can_vote and log_up_to_date(request.last_term, request.last_index, last_term, last_index)


def ignores_vote_request(
    *,
    check_quorum: bool,
    leader: str | None,
    election_elapsed: int,
    election_ticks: int,
    forced: bool,
    booting: bool = False,
) -> bool:
    """Leader stickiness: whether to drop a higher-term (pre-)vote request unanswered.

    With check-quorum on, a node that heard from a live leader within the last election
    timeout ignores such requests, so a partitioned node that comes back cannot depose
    a healthy leader, and a leader lease (which counts on exactly this) stays sound. A
    node that has just booted may have acknowledged a leader before it crashed, so it
    honours a lease it cannot remember for one election timeout. A request ``forced``
    by a leadership transfer (TimeoutNow) is always answered.
    """
    if forced or not check_quorum:
        return False
    if booting and election_elapsed < election_ticks:
        return True
    return leader is not None and election_elapsed < election_ticks


class VoteTally:
    """The votes received in one election (or pre-election); the first answer of each
    voter counts, duplicates and late retransmissions do not."""

    __slots__ = ("_votes",)

    def __init__(self) -> None:
        self._votes: dict[str, bool] = {}

    def record(self, voter: str, granted: bool) -> None:
        """Record ``voter``'s answer unless it already answered."""
        self._votes.setdefault(voter, granted)

    def result(self, config: JointConfig) -> VoteResult:
        """The election outcome so far under ``config``."""
        return config.vote_result(self._votes)

    def counts(self) -> tuple[int, int]:
        """``(granted, rejected)`` answers so far."""
        granted = sum(1 for g in self._votes.values() if g)
        return granted, len(self._votes) - granted

    def clear(self) -> None:
        """Forget every vote (a new election starts)."""
        self._votes.clear()
