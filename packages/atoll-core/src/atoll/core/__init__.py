"""atoll.core: the contracts every Atoll package and plugin shares.

Hook specifications (:mod:`atoll.core.hookspecs`), data contracts, the frame codec, the
error taxonomy, typed config, the injected clock and RNG, the storage and transport
protocols, and the per-node plugin manager.
"""

# ruff: noqa: E402 (the package's modules are imported after activate() chose them)
import warnings as _warnings

from . import native as _native

# ``python -m atoll.core.native`` imports this package, hence ``native``, before running
# it as ``__main__``; runpy warns about that, and ``native`` handles it (its ``__main__``
# block runs the imported module's ``main``). Only that one warning is silenced.
_warnings.filterwarnings(
    "ignore", message=r"'atoll\.core\.native' found in sys\.modules", category=RuntimeWarning
)

NATIVE_MODULES = ("_codec", "_kvproto")
"""The modules a native build compiles: the frame codec and the client protocol, which
every frame and every client request goes through (see :mod:`atoll.core.native`)."""

_native.activate(__name__, __path__, NATIVE_MODULES)

from ._clock import TEST_CLOCK_ENV as TEST_CLOCK_ENV
from ._clock import Clock as Clock
from ._clock import FileClock as FileClock
from ._clock import OffsetClock as OffsetClock
from ._clock import Rng as Rng
from ._clock import SystemClock as SystemClock
from ._clock import clock_from_env as clock_from_env
from ._clock import make_rng as make_rng
from ._codec import DEFAULT_MAX_FRAME_BYTES as DEFAULT_MAX_FRAME_BYTES
from ._codec import FLAG_ERROR as FLAG_ERROR
from ._codec import FLAG_REPLY as FLAG_REPLY
from ._codec import FLAG_REQUEST as FLAG_REQUEST
from ._codec import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._codec import Frame as Frame
from ._codec import FrameDecoder as FrameDecoder
from ._codec import decode_frame as decode_frame
from ._codec import encode_frame as encode_frame
from ._config import EVENT_LOOPS as EVENT_LOOPS
from ._config import AtollConfig as AtollConfig
from ._config import ClusterConfig as ClusterConfig
from ._config import LimitsConfig as LimitsConfig
from ._config import NodeConfig as NodeConfig
from ._config import RaftSettings as RaftSettings
from ._config import StorageConfig as StorageConfig
from ._config import TelemetryConfig as TelemetryConfig
from ._config import TransportConfig as TransportConfig
from ._config import load_config as load_config
from ._config import parse_address as parse_address
from ._config import parse_config as parse_config
from ._contracts import ClusterMapChange as ClusterMapChange
from ._contracts import LeaderChange as LeaderChange
from ._contracts import MemberInfo as MemberInfo
from ._contracts import MembershipEvent as MembershipEvent
from ._contracts import MemberState as MemberState
from ._contracts import PartitionMove as PartitionMove
from ._contracts import converter as converter
from ._contracts import structure as structure
from ._contracts import unstructure as unstructure
from ._errors import AtollError as AtollError
from ._errors import ConfigError as ConfigError
from ._errors import CorruptData as CorruptData
from ._errors import DiskFull as DiskFull
from ._errors import FrameError as FrameError
from ._errors import FrameTooLarge as FrameTooLarge
from ._errors import InvalidRequest as InvalidRequest
from ._errors import NotLeader as NotLeader
from ._errors import PeerUnreachable as PeerUnreachable
from ._errors import PluginError as PluginError
from ._errors import StaleEpoch as StaleEpoch
from ._errors import StorageClosed as StorageClosed
from ._errors import StorageError as StorageError
from ._errors import Timeout as Timeout
from ._errors import TransportClosed as TransportClosed
from ._errors import TransportError as TransportError
from ._errors import Unavailable as Unavailable
from ._errors import UnsupportedVersion as UnsupportedVersion
from ._errors import error_from_wire as error_from_wire
from ._errors import error_to_wire as error_to_wire
from ._gc import tune_gc as tune_gc
from ._kvproto import KV_MULTI as KV_MULTI
from ._kvproto import MAP_REQUEST as MAP_REQUEST
from ._kvproto import Consistency as Consistency
from ._kvproto import KVOp as KVOp
from ._kvproto import KVRequest as KVRequest
from ._kvproto import decode_kv_multi as decode_kv_multi
from ._kvproto import decode_kv_multi_reply as decode_kv_multi_reply
from ._kvproto import decode_kv_request as decode_kv_request
from ._kvproto import encode_kv_multi as encode_kv_multi
from ._kvproto import encode_kv_multi_reply as encode_kv_multi_reply
from ._kvproto import encode_kv_request as encode_kv_request
from ._loop import loop_options as loop_options
from ._loop import running_loop_name as running_loop_name
from ._plugins import installed_plugins as installed_plugins
from ._plugins import make_plugin_manager as make_plugin_manager
from ._plugins import make_transport as make_transport
from ._plugins import open_storage as open_storage
from ._plugins import storage_backends as storage_backends
from ._plugins import transport_backends as transport_backends
from ._registries import AdminCommand as AdminCommand
from ._registries import AdminCommandRegistry as AdminCommandRegistry
from ._registries import Counter as Counter
from ._registries import Gauge as Gauge
from ._registries import Histogram as Histogram
from ._registries import InMemoryMetrics as InMemoryMetrics
from ._registries import MetricsRegistry as MetricsRegistry
from ._storage import MAX_KEY_BYTES as MAX_KEY_BYTES
from ._storage import OP_DELETE as OP_DELETE
from ._storage import OP_DELETE_RANGE as OP_DELETE_RANGE
from ._storage import OP_PUT as OP_PUT
from ._storage import StorageEngine as StorageEngine
from ._storage import StorageSnapshot as StorageSnapshot
from ._storage import StorageStats as StorageStats
from ._storage import WriteBatch as WriteBatch
from ._storage import check_namespace as check_namespace
from ._transport import FrameHandler as FrameHandler
from ._transport import Transport as Transport
from .hookspecs import hookimpl as hookimpl

__version__ = "0.2.0"
