"""Raft leader election: terms, votes, pre-vote, check-quorum, leases, leadership transfer."""

__version__ = "0.1.0"
