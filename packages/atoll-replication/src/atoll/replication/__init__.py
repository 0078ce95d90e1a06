"""The Raft log, commit, snapshots, membership changes and the multi-group host."""

__version__ = "0.1.0"
