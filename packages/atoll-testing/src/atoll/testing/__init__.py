"""atoll.testing: fakes and tools for testing Atoll and its plugins.

A deterministic simulator (virtual clock, seeded scheduler, faulty network), an
in-process async network for the memory transport, conformance suites every storage and
transport backend runs against itself, and a pytest plugin (``nats_server`` fixture).
"""

from ._sim import LinkFaults as LinkFaults
from ._sim import NetworkStats as NetworkStats
from ._sim import Scheduler as Scheduler
from ._sim import SimNetwork as SimNetwork
from ._sim import TimerHandle as TimerHandle
from ._sim import VirtualClock as VirtualClock

__version__ = "0.1.0"
