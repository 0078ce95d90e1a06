"""atoll.transport.memory: an in-process transport over a simulated, faulty network.

A real plugin (``[transport] backend = "memory"``) for tests and simulations: many
nodes share one :class:`atoll.testing.MemoryNetwork`, whose links can drop, delay,
duplicate, reorder and partition traffic::

    net = MemoryNetwork()
    a = MemoryTransport(net, "n1")
    b = MemoryTransport(net, "n2")
    net.partition([["n1"], ["n2"]])
"""

from atoll.testing import MemoryNetwork as MemoryNetwork
from atoll.testing import default_memory_network as default_memory_network

from ._transport import MemoryStats as MemoryStats
from ._transport import MemoryTransport as MemoryTransport

__version__ = "0.2.0"
