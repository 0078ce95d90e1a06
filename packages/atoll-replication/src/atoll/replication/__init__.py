"""The Raft log, commit, snapshots and membership changes, as a pure state machine.

:class:`RaftNode` is one member of one Raft group. It does no IO: feed it ticks,
messages and requests; take :class:`Ready` batches out; persist, send and apply each one,
then call :meth:`RaftNode.advance`. :class:`MemoryLogStorage` is an in-memory
:class:`LogStorage` for tests and simulation; :func:`message_to_frame` and
:func:`frame_to_message` put messages on the wire.

The Raft core's modules (``NATIVE_MODULES``) can run compiled with mypyc: see
:mod:`atoll.core.native`. Without a build they run as the pure Python they are.
"""

# ruff: noqa: E402 (the package's modules are imported after activate() chose them)
from atoll.core import native as _native

NATIVE_MODULES = (
    "_core",
    "_log",
    "_progress",
    "_wire",
    "_readonly",
    "_confchange",
    "_engine_log",
    "_types",
    "_ready",
    "_group",
    "_writeback",
)
"""The modules a native build compiles (the hot path of every replicated entry)."""

_native.activate(__name__, __path__, NATIVE_MODULES, deps=("atoll.core", "atoll.election"))

from ._confchange import apply_conf_change as apply_conf_change
from ._confchange import decode_conf_change as decode_conf_change
from ._confchange import encode_conf_change as encode_conf_change
from ._config import RaftConfig as RaftConfig
from ._core import QUIESCE_CONTEXT as QUIESCE_CONTEXT
from ._core import TRANSFER_CONTEXT as TRANSFER_CONTEXT
from ._core import PeerStatus as PeerStatus
from ._core import RaftNode as RaftNode
from ._core import Status as Status
from ._engine_log import EngineLogStorage as EngineLogStorage
from ._host import BATCH_FRAME as BATCH_FRAME
from ._host import GroupStateMachine as GroupStateMachine
from ._host import RaftGroup as RaftGroup
from ._host import RaftHost as RaftHost
from ._log import RaftLog as RaftLog
from ._log import UnstableLog as UnstableLog
from ._progress import Inflights as Inflights
from ._progress import Progress as Progress
from ._progress import ProgressState as ProgressState
from ._progress import ProgressTracker as ProgressTracker
from ._readonly import ReadIndexQueue as ReadIndexQueue
from ._ready import Ready as Ready
from ._ready import ReadyEvent as ReadyEvent
from ._session import SessionOutcome as SessionOutcome
from ._session import SessionTable as SessionTable
from ._storage import LogCompacted as LogCompacted
from ._storage import LogStorage as LogStorage
from ._storage import LogUnavailable as LogUnavailable
from ._storage import MemoryLogStorage as MemoryLogStorage
from ._storage import SnapshotOutOfDate as SnapshotOutOfDate
from ._storage import SnapshotTemporarilyUnavailable as SnapshotTemporarilyUnavailable
from ._types import ConfChange as ConfChange
from ._types import ConfChangeOp as ConfChangeOp
from ._types import ConfChangeType as ConfChangeType
from ._types import ConfState as ConfState
from ._types import Entry as Entry
from ._types import EntryKind as EntryKind
from ._types import HardState as HardState
from ._types import Message as Message
from ._types import MessageType as MessageType
from ._types import ProposalTicket as ProposalTicket
from ._types import ReadState as ReadState
from ._types import Role as Role
from ._types import RoleChange as RoleChange
from ._types import Snapshot as Snapshot
from ._types import SnapshotMeta as SnapshotMeta
from ._wal import WAL_DIR as WAL_DIR
from ._wal import RaftWal as RaftWal
from ._wal import WalEngine as WalEngine
from ._wire import FRAME_TYPE as FRAME_TYPE
from ._wire import decode_message as decode_message
from ._wire import encode_message as encode_message
from ._wire import frame_to_message as frame_to_message
from ._wire import message_to_frame as message_to_frame
from ._writeback import WriteBackEngine as WriteBackEngine

__version__ = "0.2.0"
