"""Storage engine plugin on RocksDB (rocksdict).

``[storage] backend = "rocksdb"`` selects it; files live in ``<data_dir>/rocksdb/``.
Namespaces are column families (``ns.<name>``); the WAL is always on and
``write(sync=True)`` fsyncs it. ``[storage] sync = false`` is UNSAFE.
"""

from ._engine import RocksdbEngine as RocksdbEngine
from ._engine import RocksdbOptions as RocksdbOptions
from ._engine import RocksdbSnapshot as RocksdbSnapshot

__version__ = "0.1.0"
