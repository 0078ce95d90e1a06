"""Helpers shared by the Raft host's tests: a state machine that records what its group
applies, an engine factory, and a wait that polls a condition with a deadline."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from atoll.core import (
    StorageConfig,
    StorageEngine,
    WriteBatch,
    make_plugin_manager,
    open_storage,
)
from atoll.replication import WAL_DIR, Entry, EntryKind, WalEngine


class LogSM:
    """A test state machine: records every applied entry of its group in the engine."""

    def __init__(self, engine: StorageEngine, group: int) -> None:
        self.engine = engine
        self.group = group
        engine.create_namespace("t")
        self._applied_key = struct.pack(">IQ", group, 0)

    def applied_index(self) -> int:
        raw = self.engine.get("t", self._applied_key)
        return struct.unpack(">Q", raw)[0] if raw else 0

    def apply(self, entries: Sequence[Entry], batch: WriteBatch) -> list[Any]:
        out = []
        for e in entries:
            if e.kind is EntryKind.NORMAL and e.data:
                batch.put("t", struct.pack(">IQ", self.group, e.index), e.data)
            out.append(e.index)
        batch.put("t", self._applied_key, struct.pack(">Q", entries[-1].index))
        return out

    def values(self, engine: Any = None) -> list[bytes]:
        """The values applied, read from ``engine`` (default: the one it writes to)."""
        lo, hi = struct.pack(">IQ", self.group, 1), struct.pack(">IQ", self.group + 1, 0)
        return [v for _, v in (engine or self.engine).scan("t", lo, hi)]

    def snapshot(self) -> bytes:
        return b"\n".join(self.values())

    def restore(self, data: bytes, batch: WriteBatch) -> None:
        raise AssertionError("not expected in these tests")


class WrappedEngine:
    """Wraps an engine: what a subclass does not override goes to the engine."""

    def __init__(self, inner: StorageEngine) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def open_engine(backend: str, path: Path, *, wal: bool = False) -> StorageEngine:
    """Open a storage engine of ``backend`` at ``path``, fsync on; ``wal``: with the
    Raft log in a :class:`WalEngine` over it (``path/raftwal``)."""
    module = __import__(f"atoll.storage.{backend}._plugin", fromlist=["_plugin"])
    pm = make_plugin_manager([module], load_entry_points=False)
    engine = open_storage(pm, StorageConfig(backend=backend, sync=True), str(path))
    if wal:
        return WalEngine(engine, str(path / WAL_DIR))
    return engine


async def wait_for(cond: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``cond`` until it is true (returned) or ``timeout`` seconds pass (fails)."""
    with anyio.fail_after(timeout):
        while True:
            v = cond()
            if v:
                return v
            await anyio.sleep(0.005)
