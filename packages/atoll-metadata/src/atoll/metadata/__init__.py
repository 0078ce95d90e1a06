"""atoll.metadata: the versioned cluster map and the meta group's state machine.

The map (nodes, keyspaces, partitions, replica sets) lives in its own Raft group; every
change bumps the epoch, which rides on gossip and requests so stale holders refresh.
"""

from ._group import MetaGroupStateMachine as MetaGroupStateMachine
from ._model import META_GROUP_ID as META_GROUP_ID
from ._model import ClusterMap as ClusterMap
from ._model import KeyspaceRecord as KeyspaceRecord
from ._model import NodeRecord as NodeRecord
from ._model import NodeState as NodeState
from ._model import ReplicaSet as ReplicaSet
from ._statemachine import MetaStateMachine as MetaStateMachine
from ._statemachine import Placer as Placer
from ._statemachine import encode_meta_command as encode_meta_command
from ._statemachine import engine_placer as engine_placer
from ._statemachine import simple_placer as simple_placer

__version__ = "0.1.0"
