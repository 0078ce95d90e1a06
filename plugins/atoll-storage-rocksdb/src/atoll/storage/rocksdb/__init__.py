"""Storage engine plugin on RocksDB (rocksdict)."""

__version__ = "0.1.0"
