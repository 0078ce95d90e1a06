"""The pluggy hook implementations that make ``[storage] backend = "lmdb"`` selectable.

Owns: ``atoll_storage_backends`` and ``atoll_open_storage`` for the LMDB backend.
Never: opens anything for another backend's name (it returns None).
"""

from __future__ import annotations

from atoll.core import StorageConfig, hookimpl

from ._engine import BACKEND, LmdbEngine

__all__ = ["atoll_open_storage", "atoll_storage_backends"]


@hookimpl
def atoll_storage_backends() -> list[str]:
    """This plugin provides the ``lmdb`` backend."""
    return [BACKEND]


@hookimpl
def atoll_open_storage(backend: str, config: StorageConfig, data_dir: str) -> LmdbEngine | None:
    """Open (creating if needed) the LMDB environment in ``<data_dir>/lmdb/``."""
    if backend != BACKEND:
        return None
    return LmdbEngine(config, data_dir)
