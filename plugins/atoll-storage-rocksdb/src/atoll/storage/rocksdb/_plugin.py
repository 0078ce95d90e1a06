"""The pluggy hook implementations that make ``[storage] backend = "rocksdb"`` selectable.

Owns: ``atoll_storage_backends`` and ``atoll_open_storage`` for the RocksDB backend.
Never: opens anything for another backend's name (it returns None).
"""

from __future__ import annotations

from atoll.core import StorageConfig, hookimpl

from ._engine import BACKEND, RocksdbEngine

__all__ = ["atoll_open_storage", "atoll_storage_backends"]


@hookimpl
def atoll_storage_backends() -> list[str]:
    """This plugin provides the ``rocksdb`` backend."""
    return [BACKEND]


@hookimpl
def atoll_open_storage(backend: str, config: StorageConfig, data_dir: str) -> RocksdbEngine | None:
    """Open (creating if needed) the RocksDB database in ``<data_dir>/rocksdb/``."""
    if backend != BACKEND:
        return None
    return RocksdbEngine(config, data_dir)
