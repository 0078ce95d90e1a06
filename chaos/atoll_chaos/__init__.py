"""Atoll's chaos suites: a real multi-process cluster under injected faults, and a
linearizability checker that judges what the clients saw.

Owns: the history format, the checker and its visualization, the fault injectors
(process signals, a TCP proxy, network namespaces + nftables, clock skew), the workload,
the scenarios and their runner.
Never: imports node internals to make a run pass; everything reaches the cluster the
way an operator or client would (processes, sockets, the client library).
"""

from .checker import CheckResult, KeyResult, check, check_key, shrink, step
from .history import Event, HistoryRecorder, Op, load_events, pair_events

__all__ = [
    "CheckResult",
    "Event",
    "HistoryRecorder",
    "KeyResult",
    "Op",
    "check",
    "check_key",
    "load_events",
    "pair_events",
    "shrink",
    "step",
]
