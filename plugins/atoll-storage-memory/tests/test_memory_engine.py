"""Memory-engine specifics: copy-on-write snapshots, no durability, plugin wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll.core import (
    InvalidRequest,
    PluginError,
    StorageConfig,
    WriteBatch,
    make_plugin_manager,
    open_storage,
    storage_backends,
)
from atoll.storage.memory import MemoryEngine
from atoll.storage.memory import _plugin as memory_plugin


def test_plugin_lists_and_opens_only_memory(tmp_path: Path) -> None:
    pm = make_plugin_manager([memory_plugin], load_entry_points=False)
    assert storage_backends(pm) == ["memory"]
    engine = open_storage(pm, StorageConfig(backend="memory"), str(tmp_path))
    assert isinstance(engine, MemoryEngine)
    engine.close()
    assert memory_plugin.atoll_open_storage("lmdb", StorageConfig(), str(tmp_path)) is None
    with pytest.raises(PluginError):
        open_storage(pm, StorageConfig(backend="lmdb"), str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_reopen_starts_empty(tmp_path: Path) -> None:
    pm = make_plugin_manager([memory_plugin], load_entry_points=False)
    engine = open_storage(pm, StorageConfig(backend="memory"), str(tmp_path))
    engine.create_namespace("a")
    engine.write(WriteBatch().put("a", b"k", b"v"), sync=True)
    engine.close()
    engine = open_storage(pm, StorageConfig(backend="memory"), str(tmp_path))
    assert engine.namespaces() == []
    with pytest.raises(InvalidRequest):
        engine.get("a", b"k")
    engine.close()


def test_writes_copy_only_while_a_reader_pins_the_namespace() -> None:
    engine = MemoryEngine()
    engine.create_namespace("a")
    engine.write(WriteBatch().put("a", b"k", b"1"))
    original = engine._versions["a"].data
    engine.write(WriteBatch().put("a", b"k", b"2"))
    assert engine._versions["a"].data is original  # no reader: mutated in place
    snap = engine.snapshot()
    engine.write(WriteBatch().put("a", b"k", b"3"))
    copied = engine._versions["a"].data
    assert copied is not original
    engine.write(WriteBatch().put("a", b"k", b"4"))
    assert engine._versions["a"].data is copied  # the copy is private to the engine
    assert snap.get("a", b"k") == b"2"
    snap.close()
    assert engine._versions["a"].readers == 0
    engine.close()


def test_abandoned_scan_releases_its_pin() -> None:
    engine = MemoryEngine()
    engine.create_namespace("a")
    engine.write(WriteBatch().put("a", b"k1", b"1").put("a", b"k2", b"2"))
    it = engine.scan("a")
    assert next(it) == (b"k1", b"1")
    assert engine._versions["a"].readers == 1
    del it
    assert engine._versions["a"].readers == 0
    engine.close()


def test_sync_is_counted_not_durable() -> None:
    engine = MemoryEngine(StorageConfig(backend="memory", sync=False))
    engine.create_namespace("a")
    engine.write(WriteBatch().put("a", b"k", b"v"))
    assert engine.stats().syncs == 0
    engine.write(WriteBatch().put("a", b"k", b"v"), sync=True)
    engine.sync()
    stats = engine.stats()
    assert (stats.writes, stats.syncs, stats.disk_bytes, stats.path) == (2, 2, 0, None)
    engine.close()
