"""LMDB specifics: map growth, the map ceiling, options, directory locking, sync modes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from atoll.core import ConfigError, DiskFull, StorageConfig, StorageError, WriteBatch
from atoll.storage.lmdb import LmdbEngine

MIB = 1024 * 1024


def _config(**kw: object) -> StorageConfig:
    options = kw.pop("options", {})
    config = StorageConfig(backend="lmdb", options=dict(options))  # type: ignore[arg-type]
    for k, v in kw.items():
        setattr(config, k, v)
    return config


def _fill(engine: LmdbEngine, start: int, count: int, size: int = 16 * 1024) -> None:
    for i in range(start, start + count):
        engine.write(WriteBatch().put("d", b"%08d" % i, bytes([i % 251]) * size), sync=False)


def test_map_grows_up_to_the_ceiling_then_disk_full(tmp_path: Path) -> None:
    config = _config(map_size_mb=1, sync=False, options={"max_map_size_mb": 8, "grow_wait_s": 0.05})
    engine = LmdbEngine(config, str(tmp_path))
    try:
        engine.create_namespace("d")
        assert engine.stats().capacity_bytes == 1 * MIB
        with engine.snapshot() as snap:
            # py-lmdb invalidates every transaction when it remaps: no growth under a
            # snapshot. The write fails cleanly and the snapshot stays readable.
            with pytest.raises(DiskFull, match="snapshot"):
                _fill(engine, 0, 200)
            assert list(snap.scan("d")) == []
        stored = engine.stats().keys["d"]
        _fill(engine, stored, 200 - stored)  # ~3.2 MiB: needs at least two growths
        grown = engine.stats().capacity_bytes
        assert grown is not None and 4 * MIB <= grown <= 8 * MIB
        with pytest.raises(DiskFull) as info:
            _fill(engine, 200, 1000)
        assert "map is full" in str(info.value) and str(tmp_path) in str(info.value)
        assert engine.stats().capacity_bytes == 8 * MIB
        stored = engine.stats().keys["d"]
        assert stored >= 200
        for i in range(stored):
            assert engine.get("d", b"%08d" % i) == bytes([i % 251]) * 16 * 1024
    finally:
        engine.close()
    # The operator's remedy: reopen with a larger map (even deletes need free pages).
    engine = LmdbEngine(_config(map_size_mb=16), str(tmp_path))
    try:
        assert engine.stats().keys["d"] == stored
        engine.write(WriteBatch().delete_range("d", b"", b"\xff"))
        _fill(engine, 0, 10)
    finally:
        engine.close()


def test_growth_waits_for_concurrent_readers(tmp_path: Path) -> None:
    config = _config(map_size_mb=1, sync=False, options={"max_map_size_mb": 64})
    engine = LmdbEngine(config, str(tmp_path))
    engine.create_namespace("d")
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                with engine.snapshot() as snap:
                    keys = [k for k, _ in snap.scan("d", reverse=True, limit=20)]
                    assert keys == sorted(keys, reverse=True)
                engine.get("d", b"%08d" % 5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        _fill(engine, 0, 600)  # ~9.6 MiB: several remaps under concurrent readers
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert engine.stats().keys["d"] == 600
    engine.close()


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_map_size_mb"):
        LmdbEngine(_config(map_size_mb=64, options={"max_map_size_mb": 8}), str(tmp_path))
    with pytest.raises(ConfigError, match="unknown LMDB option"):
        LmdbEngine(_config(options={"map_sise": 1}), str(tmp_path))
    with pytest.raises(ConfigError, match="max_readers"):
        LmdbEngine(_config(options={"max_readers": 0}), str(tmp_path))


def test_directory_is_locked_while_open(tmp_path: Path) -> None:
    engine = LmdbEngine(_config(), str(tmp_path))
    with pytest.raises(StorageError, match="already open"):
        LmdbEngine(_config(), str(tmp_path))
    engine.close()
    LmdbEngine(_config(), str(tmp_path)).close()


def test_sync_modes(tmp_path: Path) -> None:
    safe = LmdbEngine(_config(sync=True), str(tmp_path / "safe"))
    # every commit fsyncs its data pages; a synced write also flushes the meta page
    assert safe._env.flags()["sync"] and not safe._env.flags()["metasync"]
    safe.create_namespace("a")
    safe.write(WriteBatch().put("a", b"k", b"v"), sync=False)
    assert safe.stats().syncs == 0
    safe.write(WriteBatch().put("a", b"k", b"w"))  # sync defaults to the config's
    assert safe.stats().syncs == 1
    safe.close()
    unsafe = LmdbEngine(_config(sync=False), str(tmp_path / "unsafe"))
    assert not unsafe._env.flags()["sync"]
    unsafe.create_namespace("a")
    unsafe.write(WriteBatch().put("a", b"k", b"v"))
    assert unsafe.stats().syncs == 0
    unsafe.write(WriteBatch().put("a", b"k", b"v"), sync=True)
    assert unsafe.stats().syncs == 1
    unsafe.close()


def test_files_live_under_backend_dir(tmp_path: Path) -> None:
    engine = LmdbEngine(_config(), str(tmp_path))
    engine.close()
    assert sorted(os.listdir(tmp_path / "lmdb")) == ["atoll.lock", "data.mdb", "lock.mdb"]
