"""Quorum arithmetic for Raft: majority configurations and joint (two-majority) configurations.

Owns: which acknowledgements, votes or activity flags amount to a quorum, for a simple
majority and for joint consensus (a decision needs a majority of *both* halves).
Never: keeps mutable state, does IO, or knows about messages; callers pass plain maps.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import attrs

__all__ = ["INFINITE_INDEX", "JointConfig", "MajorityConfig", "VoteResult"]

INFINITE_INDEX = 2**63 - 1
"""What an *empty* majority "commits": anything. Lets the empty outgoing half of a
non-joint :class:`JointConfig` drop out of ``min()``."""

_N = TypeVar("_N", int, float)


class VoteResult(enum.Enum):
    """The outcome of counting votes so far."""

    PENDING = "pending"
    """Neither a quorum of grants nor enough rejections to rule one out."""
    WON = "won"
    LOST = "lost"


def _quorum_value(voters: frozenset[str], values: Mapping[str, _N], missing: _N, inf: _N) -> _N:
    """The largest value that a quorum of ``voters`` has reached (absent voters count as
    ``missing``)."""
    if not voters:
        return inf
    ordered = sorted((values.get(v, missing) for v in voters), reverse=True)
    return ordered[len(voters) // 2]


@attrs.frozen(slots=True)
class MajorityConfig:
    """A set of voters; a decision needs more than half of them."""

    voters: frozenset[str] = frozenset()

    @classmethod
    def of(cls, voters: Iterable[str]) -> MajorityConfig:
        """Build a configuration from any iterable of node ids."""
        return cls(frozenset(voters))

    @property
    def quorum(self) -> int:
        """How many voters make a majority (0 for an empty configuration)."""
        return len(self.voters) // 2 + 1 if self.voters else 0

    def committed_index(self, acked: Mapping[str, int]) -> int:
        """The highest index acknowledged by a majority (``INFINITE_INDEX`` if empty)."""
        return _quorum_value(self.voters, acked, 0, INFINITE_INDEX)

    def quorum_time(self, stamps: Mapping[str, float]) -> float:
        """The latest instant by which a majority had acknowledged (``inf`` if empty)."""
        return _quorum_value(self.voters, stamps, float("-inf"), float("inf"))

    def vote_result(self, votes: Mapping[str, bool]) -> VoteResult:
        """Count ``votes`` (True = granted); voters not in the map have not answered."""
        if not self.voters:
            return VoteResult.WON
        granted = sum(1 for v in self.voters if votes.get(v) is True)
        missing = sum(1 for v in self.voters if v not in votes)
        if granted >= self.quorum:
            return VoteResult.WON
        if granted + missing >= self.quorum:
            return VoteResult.PENDING
        return VoteResult.LOST


@attrs.frozen(slots=True)
class JointConfig:
    """The voters of a Raft group: ``incoming`` alone, or ``incoming`` and ``outgoing``
    together while a joint-consensus membership change is in progress."""

    incoming: MajorityConfig = MajorityConfig()
    outgoing: MajorityConfig = MajorityConfig()

    @classmethod
    def of(cls, incoming: Iterable[str], outgoing: Iterable[str] = ()) -> JointConfig:
        """Build a (possibly joint) configuration from node ids."""
        return cls(MajorityConfig.of(incoming), MajorityConfig.of(outgoing))

    @property
    def is_joint(self) -> bool:
        """Whether an outgoing configuration is still in force."""
        return bool(self.outgoing.voters)

    @property
    def voters(self) -> frozenset[str]:
        """Every node whose vote or acknowledgement counts in either half."""
        return self.incoming.voters | self.outgoing.voters

    def committed_index(self, acked: Mapping[str, int]) -> int:
        """The highest index acknowledged by a majority of each half."""
        return min(self.incoming.committed_index(acked), self.outgoing.committed_index(acked))

    def quorum_time(self, stamps: Mapping[str, float]) -> float:
        """The latest instant by which a majority of each half had acknowledged."""
        return min(self.incoming.quorum_time(stamps), self.outgoing.quorum_time(stamps))

    def vote_result(self, votes: Mapping[str, bool]) -> VoteResult:
        """WON only if both halves won; LOST if either half lost."""
        a = self.incoming.vote_result(votes)
        b = self.outgoing.vote_result(votes)
        if a is b:
            return a
        if VoteResult.LOST in (a, b):
            return VoteResult.LOST
        return VoteResult.PENDING

    def quorum_active(self, is_active: Callable[[str], bool]) -> bool:
        """Check-quorum: whether a quorum of each half has been heard from recently."""
        return self.vote_result({v: is_active(v) for v in self.voters}) is VoteResult.WON
