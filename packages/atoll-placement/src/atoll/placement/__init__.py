"""atoll.placement: the placement engine, as pure functions.

- :func:`partition_for_key` — key -> partition (xxh3_64 of the key bytes mod partitions);
- :func:`compute_placement` — partition -> replicas from live nodes and their labels,
  spread over zones/racks/hosts, balanced with bounded load, sticky to the current table;
- :func:`table_diff` — the add / transfer-leader / remove steps between two tables;
- :func:`placement_stats` — replicas and leaders per node and zone, imbalance figures.

Nothing here does IO, reads the clock or draws random numbers: the metadata manager, the
rebalancer and clients all call these and get the same answer.
"""

from ._core import compute_placement as compute_placement
from ._diff import table_diff as table_diff
from ._errors import PlacementError as PlacementError
from ._errors import PlacementRuleError as PlacementRuleError
from ._hashing import key_hash as key_hash
from ._hashing import partition_for_key as partition_for_key
from ._model import DEFAULT_EPSILON as DEFAULT_EPSILON
from ._model import RESERVED_LABELS as RESERVED_LABELS
from ._model import IsolationLevel as IsolationLevel
from ._model import KeyspaceSpec as KeyspaceSpec
from ._model import LabelSelector as LabelSelector
from ._model import MoveKind as MoveKind
from ._model import NodeLabels as NodeLabels
from ._model import Pin as Pin
from ._model import PlacementNode as PlacementNode
from ._model import PlacementResult as PlacementResult
from ._model import PlacementRules as PlacementRules
from ._model import PlacementTable as PlacementTable
from ._model import PlacementViolation as PlacementViolation
from ._model import ReplicaMove as ReplicaMove
from ._model import ViolationKind as ViolationKind
from ._stats import PlacementStats as PlacementStats
from ._stats import placement_stats as placement_stats
from ._validate import MAX_PARTITIONS as MAX_PARTITIONS
from ._validate import MAX_RF as MAX_RF
from ._validate import validate_spec as validate_spec

__version__ = "0.1.0"
