"""RocksDB specifics: column-family naming, options, locking, rocksdict workarounds."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from atoll.core import ConfigError, StorageConfig, StorageError, WriteBatch
from atoll.storage.rocksdb import RocksdbEngine


def _engine(path: Path, **options: object) -> RocksdbEngine:
    return RocksdbEngine(StorageConfig(backend="rocksdb", options=dict(options)), str(path))


def test_namespace_named_default_is_its_own_column_family(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    engine.create_namespace("default")
    engine.write(WriteBatch().put("default", b"k", b"v"))
    assert engine.namespaces() == ["default"]
    engine.close()
    cfs = Rdict.list_cf(str(tmp_path / "rocksdb"), Options(raw_mode=True))
    assert sorted(cfs) == ["default", "ns.default"]
    engine = _engine(tmp_path)
    assert engine.get("default", b"k") == b"v"
    engine.close()


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown RocksDB option"):
        _engine(tmp_path, cache_mb=1)
    with pytest.raises(ConfigError, match="compression"):
        _engine(tmp_path, compression="gzip")
    with pytest.raises(ConfigError, match="block_cache_mb"):
        _engine(tmp_path, block_cache_mb=0)


def test_directory_is_locked_while_open(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    with pytest.raises(StorageError, match="locked"):
        _engine(tmp_path)
    engine.close()
    _engine(tmp_path).close()


def test_close_releases_open_snapshots_and_scans(tmp_path: Path) -> None:
    # A live rocksdict iterator keeps the database (and its LOCK) open after close().
    engine = _engine(tmp_path)
    engine.create_namespace("a")
    engine.write(WriteBatch().put("a", b"k1", b"1").put("a", b"k2", b"2"))
    snap = engine.snapshot()
    it = engine.scan("a")
    assert next(it) == (b"k1", b"1")
    engine.close()
    reopened = _engine(tmp_path)
    assert reopened.get("a", b"k2") == b"2"
    reopened.close()
    del snap, it


def test_snapshot_is_consistent_across_namespaces_under_concurrent_writes(
    tmp_path: Path,
) -> None:
    engine = _engine(tmp_path)
    engine.create_namespace("x")
    engine.create_namespace("y")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            i = 0
            while not stop.is_set():
                n = i.to_bytes(8, "big")
                engine.write(WriteBatch().put("x", b"n", n).put("y", b"n", n), sync=False)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            with engine.snapshot() as snap:
                assert snap.get("x", b"n") == snap.get("y", b"n")
    finally:
        stop.set()
        for t in threads:
            t.join()
        engine.close()
    assert not errors, errors


def test_a_synced_write_syncs_the_wal_after_an_unsynced_write(tmp_path: Path) -> None:
    """rocksdict holds the GIL for the whole of a synced Write, fsync included (a node's
    event loop stalled for every log fsync); flush_wal releases it. So a synced write is
    an unsynced Write, then a WAL sync; an unsynced one never syncs."""
    eng = _engine(tmp_path)
    eng.create_namespace("a")
    calls: list[tuple[str, object]] = []

    class Spy:
        def __init__(self, db: Rdict) -> None:
            self._db = db

        def write(self, batch: object, opts: object) -> None:
            calls.append(("write", opts.sync))  # type: ignore[attr-defined]
            self._db.write(batch, opts)

        def flush_wal(self, sync: bool) -> None:
            calls.append(("flush_wal", sync))
            self._db.flush_wal(sync)

        def __getattr__(self, name: str) -> object:
            return getattr(self._db, name)

    real = eng._db
    eng._db = Spy(real)  # type: ignore[assignment]
    try:
        eng.write(WriteBatch().put("a", b"k", b"v"), sync=True)
        assert calls == [("write", False), ("flush_wal", True)]
        calls.clear()
        eng.write(WriteBatch().put("a", b"k2", b"v"), sync=False)
        assert calls == [("write", False)]
        assert eng.get("a", b"k") == b"v" and eng.get("a", b"k2") == b"v"
    finally:
        eng._db = real
        eng.close()
