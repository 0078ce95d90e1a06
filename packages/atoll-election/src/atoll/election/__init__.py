"""Raft leader election as small pure units: terms, votes, pre-vote, check-quorum, leases,
leadership transfer and election priority.

Everything here is deterministic and IO-free: time is logical ticks (plus monotonic
``now`` values passed in for leases) and randomness comes from an injected
``random.Random``. :mod:`atoll.replication` composes these units into the Raft node.

The quorum arithmetic and the lease (``NATIVE_MODULES``), which every replicated entry
and every lease read go through, can run compiled with mypyc: see
:mod:`atoll.core.native`.
"""

# ruff: noqa: E402 (the package's modules are imported after activate() chose them)
from atoll.core import native as _native

NATIVE_MODULES = ("_quorum", "_lease")
"""The modules a native build compiles."""

_native.activate(__name__, __path__, NATIVE_MODULES, deps=("atoll.core",))

from ._lease import LeaseTracker as LeaseTracker
from ._quorum import INFINITE_INDEX as INFINITE_INDEX
from ._quorum import JointConfig as JointConfig
from ._quorum import MajorityConfig as MajorityConfig
from ._quorum import VoteResult as VoteResult
from ._timer import ElectionTimer as ElectionTimer
from ._transfer import LeadershipTransfer as LeadershipTransfer
from ._votes import VoteRequest as VoteRequest
from ._votes import VoteTally as VoteTally
from ._votes import ignores_vote_request as ignores_vote_request
from ._votes import log_up_to_date as log_up_to_date
from ._votes import may_grant_vote as may_grant_vote

__version__ = "0.2.0"
