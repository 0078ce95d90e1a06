"""atoll.testing: fakes and tools for testing Atoll and its plugins.

A deterministic simulator (virtual clock, seeded scheduler, faulty network), an
in-process async network for the memory transport, conformance suites every storage and
transport backend runs against itself, and a pytest plugin (``nats_server`` fixture).
"""

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
from ._storage_conformance import StorageConformance as StorageConformance
from ._storage_conformance import open_engine_via_plugin as open_engine_via_plugin
from ._storage_model import run_storage_state_machine as run_storage_state_machine
from ._transport_conformance import FrameRecorder as FrameRecorder
from ._transport_conformance import TransportConformance as TransportConformance
from ._transport_conformance import TransportHarness as TransportHarness
from ._transport_conformance import wait_until as wait_until

__version__ = "0.1.0"
