"""In-memory storage engine plugin for tests and simulation.

``[storage] backend = "memory"`` selects it. Nothing is ever written to disk: a restart
loses every write, whatever ``sync`` says. Snapshots are copy-on-write.
"""

from ._engine import MemoryEngine as MemoryEngine
from ._engine import MemorySnapshot as MemorySnapshot

__version__ = "0.1.0"
