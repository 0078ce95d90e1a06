"""The pluggy hook implementations that make ``[storage] backend = "memory"`` selectable.

Owns: ``atoll_storage_backends`` and ``atoll_open_storage`` for the memory backend.
Never: opens anything for another backend's name (it returns None).
"""

from __future__ import annotations

from atoll.core import StorageConfig, hookimpl

from ._engine import BACKEND, MemoryEngine

__all__ = ["atoll_open_storage", "atoll_storage_backends"]


@hookimpl
def atoll_storage_backends() -> list[str]:
    """This plugin provides the ``memory`` backend."""
    return [BACKEND]


@hookimpl
def atoll_open_storage(backend: str, config: StorageConfig, data_dir: str) -> MemoryEngine | None:
    """Open a fresh, empty in-memory engine (``data_dir`` is not used)."""
    if backend != BACKEND:
        return None
    return MemoryEngine(config)
