"""Storage engine plugin on LMDB.

``[storage] backend = "lmdb"`` selects it; files live in ``<data_dir>/lmdb/``.
Namespaces are LMDB named sub-databases; snapshots are read transactions. With
``[storage] sync = true`` every commit fsyncs its data pages and a synced write its meta
page too; ``sync = false`` is UNSAFE.
"""

from ._engine import LmdbEngine as LmdbEngine
from ._engine import LmdbOptions as LmdbOptions
from ._engine import LmdbSnapshot as LmdbSnapshot

__version__ = "0.2.0"
