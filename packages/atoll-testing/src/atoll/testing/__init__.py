"""atoll.testing: fakes and tools for testing Atoll and its plugins.

A deterministic simulator (virtual clock, seeded scheduler, faulty network), an
in-process async network for the memory transport, conformance suites every storage and
transport backend runs against itself, and a pytest plugin (``nats_server`` fixture).
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._memnet import MemoryEndpoint as MemoryEndpoint
from ._memnet import MemoryNetwork as MemoryNetwork
from ._memnet import default_memory_network as default_memory_network
from ._nats import NatsServer as NatsServer
from ._nats import NatsServerError as NatsServerError
from ._nats import find_nats_server as find_nats_server
from ._sim import LinkFaults as LinkFaults
from ._sim import NetworkStats as NetworkStats
from ._sim import Scheduler as Scheduler
from ._sim import SimNetwork as SimNetwork
from ._sim import TimerHandle as TimerHandle
from ._sim import VirtualClock as VirtualClock

# The conformance suites and the storage model import pytest and hypothesis: they load
# on first use, so a node that imports the memory network (the memory transport plugin
# does) never pays for them (about 2 s of start-up).
_LAZY = {
    "StorageConformance": "._storage_conformance",
    "open_engine_via_plugin": "._storage_conformance",
    "run_storage_state_machine": "._storage_model",
    "apply_ops": "._storage_model",
    "batch_op": "._storage_model",
    "scan_model": "._storage_model",
    "FrameRecorder": "._transport_conformance",
    "TransportConformance": "._transport_conformance",
    "TransportHarness": "._transport_conformance",
    "wait_until": "._transport_conformance",
}

if TYPE_CHECKING:
    from ._storage_conformance import StorageConformance as StorageConformance
    from ._storage_conformance import open_engine_via_plugin as open_engine_via_plugin
    from ._storage_model import apply_ops as apply_ops
    from ._storage_model import batch_op as batch_op
    from ._storage_model import run_storage_state_machine as run_storage_state_machine
    from ._storage_model import scan_model as scan_model
    from ._transport_conformance import FrameRecorder as FrameRecorder
    from ._transport_conformance import TransportConformance as TransportConformance
    from ._transport_conformance import TransportHarness as TransportHarness
    from ._transport_conformance import wait_until as wait_until


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__version__ = "0.2.0"
