"""atoll.coordination: the node's client-facing request router and read/write paths.

The key-value state machine every data partition applies committed commands to (put,
delete, compare-and-set, batch) with its client session table, and the router that serves
client requests (``KVService``).

The command codec, the state machine's apply and the request router (``NATIVE_MODULES``)
can run compiled with mypyc: see :mod:`atoll.core.native`.
"""

# ruff: noqa: E402 (the package's modules are imported after activate() chose them)
from atoll.core import native as _native

NATIVE_MODULES = ("_commands", "_statemachine", "_router")
"""The modules a native build compiles (every replica applies every write through them,
and every client request is routed by ``_router``)."""

_native.activate(
    __name__,
    __path__,
    NATIVE_MODULES,
    deps=("atoll.core", "atoll.replication", "atoll.metadata", "atoll.placement"),
)

from ._commands import CasCommand as CasCommand
from ._commands import Command as Command
from ._commands import CommandResult as CommandResult
from ._commands import DeleteCommand as DeleteCommand
from ._commands import PutCommand as PutCommand
from ._commands import WriteBatchCommand as WriteBatchCommand
from ._commands import decode_command as decode_command
from ._commands import decode_result as decode_result
from ._commands import encode_command as encode_command
from ._commands import encode_result as encode_result
from ._service import GroupHost as GroupHost
from ._service import KVService as KVService
from ._service import ReplicaGroup as ReplicaGroup
from ._statemachine import KVStateMachine as KVStateMachine
from ._statemachine import PartitionApply as PartitionApply
from ._statemachine import PartitionStateMachine as PartitionStateMachine
from ._statemachine import data_key as data_key
from ._statemachine import partition_range as partition_range

__version__ = "0.2.0"
