"""The storage conformance suite: every backend proves the StorageEngine contract on itself.

Owns: :class:`StorageConformance`, a pytest base class (trio.testing's
``check_two_way_stream`` idea) whose tests exercise :class:`atoll.core.StorageEngine`
and :class:`atoll.core.StorageSnapshot`, including a Hypothesis state machine against a
dict model and durability across a SIGKILLed process.
Never: knows a particular backend. A backend's test module subclasses it and declares
what it supports; an unsupported capability is a visible skip naming the declaration.

Usage::

    from atoll.testing import StorageConformance

    class TestLmdbConformance(StorageConformance):
        backend = "lmdb"
        plugin = "atoll.storage.lmdb._plugin"

The contract decisions the suite pins down (beyond the protocol docstrings):

* ``get``/``scan``/``write`` on a namespace that does not exist raise InvalidRequest,
  and so does a snapshot read of a namespace created after the snapshot.
* A value may be empty (``b""`` is stored and returned, distinct from None).
* An empty ``start`` is the same as ``None``; ``start >= end`` is an empty range.
* A closed engine or snapshot raises StorageClosed on every call except ``close``.
* Disk engines keep their files under ``<data_dir>/<backend>/`` and nothing else.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from atoll.core import (
    MAX_KEY_BYTES,
    CorruptData,
    DiskFull,
    InvalidRequest,
    StorageClosed,
    StorageConfig,
    StorageEngine,
    StorageSnapshot,
    WriteBatch,
    make_plugin_manager,
    open_storage,
)

from ._storage_child import KILL_NAMESPACE, batch_keys, batch_value
from ._storage_model import run_storage_state_machine

__all__ = ["StorageConformance", "open_engine_via_plugin"]

_ODD_KEYS = [
    b"\x00",
    b"\x00\x00",
    b"\x00\x01",
    b"\x01",
    b"a",
    b"a\x00",
    b"a\xff",
    b"ab",
    b"b",
    b"\x7f",
    b"\x80",
    b"\xfe\xff",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
    b"\xff\xff\xff",
]
"""Keys whose unsigned byte order differs from signed or string order."""

_CHILD_DEADLINE_S = 60.0
"""How long a kill-test child may take to report progress before the test fails."""


def open_engine_via_plugin(
    plugin: str,
    backend: str,
    data_dir: str | os.PathLike[str],
    *,
    sync: bool = True,
    options: Mapping[str, Any] | None = None,
    map_size_mb: int | None = None,
) -> StorageEngine:
    """Open ``backend`` the way a node does: a plugin manager with only ``plugin``.

    :param plugin: importable module holding the hook implementations
        (``"atoll.storage.lmdb._plugin"``).
    """
    pm = make_plugin_manager([importlib.import_module(plugin)], load_entry_points=False)
    config = StorageConfig(backend=backend, sync=sync, options=dict(options or {}))
    if map_size_mb is not None:
        config.map_size_mb = map_size_mb
    return open_storage(pm, config, os.fspath(data_dir))


def _put(
    engine: StorageEngine, ns: str, items: Mapping[bytes, bytes], sync: bool | None = True
) -> None:
    batch = WriteBatch()
    for k, v in items.items():
        batch.put(ns, k, v)
    engine.write(batch, sync=sync)


def _expected(
    model: Mapping[bytes, bytes],
    start: bytes | None,
    end: bytes | None,
    reverse: bool,
    limit: int | None,
) -> list[tuple[bytes, bytes]]:
    keys = sorted(k for k in model if (not start or k >= start) and (end is None or k < end))
    if reverse:
        keys.reverse()
    if limit is not None:
        keys = keys[:limit]
    return [(k, model[k]) for k in keys]


class StorageConformance:
    """Subclass me in a backend's tests to run the storage contract against it.

    Required class attributes: :attr:`backend` and :attr:`plugin`. Capabilities default
    to a durable disk engine; override the flags (and methods) that differ.
    """

    backend: ClassVar[str] = ""
    """The ``[storage] backend`` name."""
    plugin: ClassVar[str] = ""
    """Module with the backend's hook implementations, e.g. ``atoll.storage.lmdb._plugin``."""
    engine_options: ClassVar[dict[str, Any]] = {}
    """``[storage] options`` every engine of the suite is opened with."""
    durable: ClassVar[bool] = True
    """Data survives close/reopen and a killed process (False: those tests are skipped)."""
    on_disk: ClassVar[bool] = True
    """The engine keeps files under ``<data_dir>/<backend>/`` (``disk_bytes > 0``)."""
    exact_key_counts: ClassVar[bool] = True
    """``stats().keys`` is exact (False: within a factor of two, as RocksDB estimates)."""
    max_key_bytes: ClassVar[int] = MAX_KEY_BYTES
    """The longest key the engine stores; longer keys must raise InvalidRequest."""
    can_corrupt: ClassVar[bool] = False
    """:meth:`corrupt_files` is implemented: opening corrupted files raises CorruptData."""
    can_fill_disk: ClassVar[bool] = False
    """:meth:`full_disk_engine` is implemented: filling it raises DiskFull."""
    stateful_examples: ClassVar[int] = 20
    """Hypothesis examples for the model test (env ATOLL_STORAGE_STATEFUL_EXAMPLES wins)."""
    stateful_steps: ClassVar[int] = 40
    """Steps per example for the model test (env ATOLL_STORAGE_STATEFUL_STEPS wins)."""

    # ------------------------------------------------------------------ hooks for subclasses

    def open_engine(
        self,
        data_dir: Path,
        *,
        sync: bool = True,
        options: Mapping[str, Any] | None = None,
    ) -> StorageEngine:
        """Open the engine at ``data_dir`` (default: through the plugin manager)."""
        merged = {**self.engine_options, **(options or {})}
        return open_engine_via_plugin(
            self.plugin, self.backend, data_dir, sync=sync, options=merged
        )

    def corrupt_files(self, data_dir: Path) -> None:
        """Damage the closed engine's files at ``data_dir`` so that opening must fail."""
        pytest.skip(f"{type(self).__name__} declares can_corrupt = False")

    @contextlib.contextmanager
    def full_disk_engine(self, tmp_path: Path) -> Iterator[StorageEngine]:
        """Yield an open engine on storage small enough to fill within a few MiB."""
        pytest.skip(f"{type(self).__name__} declares can_fill_disk = False")
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def data_dir(self, tmp_path: Path) -> Path:
        """A fresh node data directory."""
        path = tmp_path / "data"
        path.mkdir()
        return path

    @pytest.fixture
    def engine(self, data_dir: Path) -> Iterator[StorageEngine]:
        """An open engine with namespaces ``a`` and ``b``, closed after the test."""
        eng = self.open_engine(data_dir)
        eng.create_namespace("a")
        eng.create_namespace("b")
        try:
            yield eng
        finally:
            eng.close()

    def _require_durable(self) -> None:
        if not self.durable:
            pytest.skip(f"{type(self).__name__} declares durable = False")

    # ------------------------------------------------------------------ basics

    def test_satisfies_protocol(self, engine: StorageEngine) -> None:
        assert isinstance(engine, StorageEngine)
        assert engine.backend == self.backend
        with engine.snapshot() as snap:
            assert isinstance(snap, StorageSnapshot)

    def test_namespaces_create_idempotent_and_listed(self, engine: StorageEngine) -> None:
        assert engine.namespaces() == ["a", "b"]
        engine.create_namespace("a")
        engine.create_namespace("z.raft-log_1")
        engine.create_namespace("0")
        assert engine.namespaces() == ["0", "a", "b", "z.raft-log_1"]

    def test_namespaces_are_isolated(self, engine: StorageEngine) -> None:
        _put(engine, "a", {b"k": b"in-a", b"only-a": b"1"})
        _put(engine, "b", {b"k": b"in-b"})
        assert engine.get("a", b"k") == b"in-a"
        assert engine.get("b", b"k") == b"in-b"
        assert engine.get("b", b"only-a") is None
        assert list(engine.scan("b")) == [(b"k", b"in-b")]
        engine.write(WriteBatch().delete_range("a", b"\x00", b"\xff\xff"))
        assert engine.get("b", b"k") == b"in-b"
        assert list(engine.scan("a")) == []

    def test_unknown_namespace_is_invalid(self, engine: StorageEngine) -> None:
        with pytest.raises(InvalidRequest):
            engine.get("nope", b"k")
        with pytest.raises(InvalidRequest):
            list(engine.scan("nope"))
        with pytest.raises(InvalidRequest):
            engine.write(WriteBatch().put("nope", b"k", b"v"))
        assert "nope" not in engine.namespaces()

    def test_get_put_delete(self, engine: StorageEngine) -> None:
        assert engine.get("a", b"k") is None
        engine.write(WriteBatch().put("a", b"k", b"v1"))
        assert engine.get("a", b"k") == b"v1"
        engine.write(WriteBatch().put("a", b"k", b"v2"), sync=False)
        assert engine.get("a", b"k") == b"v2"
        engine.write(WriteBatch().delete("a", b"k"))
        assert engine.get("a", b"k") is None
        engine.write(WriteBatch().delete("a", b"never-there"))
        engine.write(WriteBatch())  # an empty batch is a no-op

    def test_empty_and_large_values(self, engine: StorageEngine) -> None:
        big = bytes(range(256)) * 4096  # 1 MiB, every byte value
        _put(engine, "a", {b"empty": b"", b"big": big})
        assert engine.get("a", b"empty") == b""
        assert engine.get("a", b"big") == big
        assert list(engine.scan("a", b"e")) == [(b"empty", b"")]

    def test_accepts_bytearray_and_memoryview(self, engine: StorageEngine) -> None:
        loose: Any = engine  # the protocol says bytes; bytes-like objects are accepted too
        batch: Any = WriteBatch()
        engine.write(batch.put("a", bytearray(b"k"), memoryview(b"v")))
        assert loose.get("a", bytearray(b"k")) == b"v"
        assert loose.get("a", memoryview(b"k")) == b"v"

    def test_longest_key(self, engine: StorageEngine) -> None:
        longest = b"\xfe" * self.max_key_bytes
        _put(engine, "a", {longest: b"v"})
        assert engine.get("a", longest) == b"v"
        assert list(engine.scan("a")) == [(longest, b"v")]
        too_long = b"\xfe" * (self.max_key_bytes + 1)
        with pytest.raises(InvalidRequest):
            engine.write(WriteBatch().put("a", b"first", b"1").put("a", too_long, b"v"))
        assert engine.get("a", b"first") is None
        with pytest.raises(InvalidRequest):
            engine.get("a", too_long)

    # ------------------------------------------------------------------ batches

    def test_batch_is_atomic_and_later_ops_win(self, engine: StorageEngine) -> None:
        _put(engine, "a", {b"r1": b"x", b"r2": b"x", b"r3": b"x", b"old": b"x"})
        batch = (
            WriteBatch()
            .put("a", b"k", b"1")
            .put("a", b"k", b"2")
            .put("a", b"gone", b"1")
            .delete("a", b"gone")
            .delete_range("a", b"r", b"s")
            .put("a", b"r2", b"back")
            .put("b", b"other", b"ns")
            .delete("a", b"old")
            .put("a", b"old", b"new")
        )
        engine.write(batch)
        assert dict(engine.scan("a")) == {b"k": b"2", b"r2": b"back", b"old": b"new"}
        assert engine.get("b", b"other") == b"ns"

    def test_batch_failing_validation_applies_nothing(self, engine: StorageEngine) -> None:
        _put(engine, "a", {b"keep": b"1"})
        batch = (
            WriteBatch()
            .put("a", b"new", b"1")
            .delete("a", b"keep")
            .delete_range("b", b"", b"\xff")
            .put("missing-ns", b"k", b"v")
            .put("a", b"after", b"1")
        )
        with pytest.raises(InvalidRequest):
            engine.write(batch)
        assert dict(engine.scan("a")) == {b"keep": b"1"}
        # A batch whose ops were tampered with after validation is still checked.
        bad = WriteBatch().put("a", b"x", b"1")
        bad.ops.append((bad.ops[0][0], "a", b"", b"v"))
        with pytest.raises(InvalidRequest):
            engine.write(bad)
        assert engine.get("a", b"x") is None
        with pytest.raises(InvalidRequest):
            engine.write({"a": b"k"})  # type: ignore[arg-type]
        engine.write(WriteBatch().put("a", b"still", b"works"))
        assert engine.get("a", b"still") == b"works"

    def test_delete_range(self, engine: StorageEngine) -> None:
        model = {k: b"v" + k for k in _ODD_KEYS}
        _put(engine, "a", model)
        _put(engine, "b", model)
        engine.write(WriteBatch().delete_range("a", b"a", b"b"))
        expect = {k: v for k, v in model.items() if not (b"a" <= k < b"b")}
        assert dict(engine.scan("a")) == expect
        engine.write(WriteBatch().delete_range("a", b"", b"\x01"))
        expect = {k: v for k, v in expect.items() if k >= b"\x01"}
        assert dict(engine.scan("a")) == expect
        engine.write(WriteBatch().delete_range("a", b"\xff", b"\xff\xff"))
        expect = {k: v for k, v in expect.items() if not (b"\xff" <= k < b"\xff\xff")}
        assert dict(engine.scan("a")) == expect
        engine.write(WriteBatch().delete_range("a", b"zz", b"zzz"))  # empty range: no-op
        assert dict(engine.scan("a")) == expect
        assert dict(engine.scan("b")) == model

    # ------------------------------------------------------------------ scans

    def test_scan_order_bounds_limit_reverse(self, engine: StorageEngine) -> None:
        model = {k: b"v" + k for k in _ODD_KEYS}
        _put(engine, "a", model)
        bounds: list[bytes | None] = [None, b"", b"\x00", b"\x00\x00", b"a", b"a\x00", b"\x80"]
        bounds += [b"\xff", b"\xff\xff", b"\xff\xff\xff\xff", b"zzz"]
        for start, end, reverse, limit in itertools.product(
            bounds, bounds, (False, True), (None, 0, 1, 3)
        ):
            if end == b"":
                continue
            got = list(engine.scan("a", start, end, reverse=reverse, limit=limit))
            want = _expected(model, start, end, reverse, limit)
            assert got == want, (start, end, reverse, limit)

    def test_scan_empty_namespace_and_ranges(self, engine: StorageEngine) -> None:
        assert list(engine.scan("a")) == []
        assert list(engine.scan("a", reverse=True)) == []
        _put(engine, "a", {b"m": b"1"})
        assert list(engine.scan("a", b"n")) == []
        assert list(engine.scan("a", None, b"m")) == []
        assert list(engine.scan("a", b"z", b"a")) == []
        assert list(engine.scan("a", b"m", b"m")) == []
        assert list(engine.scan("a", b"m", b"m\x00")) == [(b"m", b"1")]
        assert list(engine.scan("a", b"m", b"m\x00", reverse=True)) == [(b"m", b"1")]

    def test_scan_many_keys_in_order(self, engine: StorageEngine) -> None:
        keys = [i.to_bytes(4, "big") for i in range(0, 3000, 3)]
        batch = WriteBatch()
        for k in reversed(keys):
            batch.put("a", k, k)
        engine.write(batch, sync=False)
        assert [k for k, _ in engine.scan("a")] == keys
        assert [k for k, _ in engine.scan("a", reverse=True)] == keys[::-1]
        mid = (1500).to_bytes(4, "big")
        assert [k for k, _ in engine.scan("a", mid, limit=5)] == keys[500:505]
        assert [k for k, _ in engine.scan("a", None, mid, reverse=True, limit=2)] == [
            keys[499],
            keys[498],
        ]

    def test_scan_may_be_abandoned(self, engine: StorageEngine) -> None:
        _put(engine, "a", {b"%04d" % i: b"v" for i in range(600)})
        it = engine.scan("a")
        assert next(it) == (b"0000", b"v")
        del it
        for _ in range(50):  # abandoned iterators must not accumulate resources
            next(engine.scan("a", reverse=True))
        engine.write(WriteBatch().put("a", b"after", b"1"))
        assert engine.get("a", b"after") == b"1"

    # ------------------------------------------------------------------ snapshots

    def test_snapshot_isolation(self, engine: StorageEngine) -> None:
        _put(engine, "a", {b"k1": b"1", b"k2": b"2", b"k3": b"3"})
        _put(engine, "b", {b"x": b"1"})
        snap = engine.snapshot()
        try:
            engine.write(
                WriteBatch()
                .put("a", b"k1", b"changed")
                .delete("a", b"k2")
                .put("a", b"k4", b"new")
                .delete_range("b", b"", b"\xff")
            )
            assert snap.get("a", b"k1") == b"1"
            assert snap.get("a", b"k2") == b"2"
            assert snap.get("a", b"k4") is None
            assert snap.get("b", b"x") == b"1"
            want = [(b"k1", b"1"), (b"k2", b"2"), (b"k3", b"3")]
            assert list(snap.scan("a")) == want
            assert list(snap.scan("a", reverse=True)) == want[::-1]
            assert list(snap.scan("a", b"k2", b"k3")) == [(b"k2", b"2")]
            assert list(snap.scan("a", b"k2", limit=1, reverse=True)) == [(b"k3", b"3")]
            assert list(snap.scan("a", b"k9")) == []
            assert engine.get("a", b"k1") == b"changed"
            assert dict(engine.scan("a")) == {b"k1": b"changed", b"k3": b"3", b"k4": b"new"}
        finally:
            snap.close()
        snap.close()  # idempotent

    def test_snapshots_at_different_points(self, engine: StorageEngine) -> None:
        snaps: list[tuple[StorageSnapshot, dict[bytes, bytes]]] = []
        model: dict[bytes, bytes] = {}
        try:
            for i in range(5):
                key = b"k%d" % (i % 3)
                model[key] = b"%d" % i
                _put(engine, "a", {key: model[key]}, sync=False)
                snaps.append((engine.snapshot(), dict(model)))
            for snap, frozen in snaps:
                assert dict(snap.scan("a")) == frozen
                for key in (b"k0", b"k1", b"k2"):
                    assert snap.get("a", key) == frozen.get(key)
        finally:
            for snap, _ in snaps:
                snap.close()

    def test_snapshot_namespaces_fixed_at_creation(self, engine: StorageEngine) -> None:
        with engine.snapshot() as snap:
            engine.create_namespace("later")
            _put(engine, "later", {b"k": b"v"})
            with pytest.raises(InvalidRequest):
                snap.get("later", b"k")
            with pytest.raises(InvalidRequest):
                list(snap.scan("later"))
            with pytest.raises(InvalidRequest):
                snap.get("never", b"k")
            with pytest.raises(InvalidRequest):
                snap.get("a", b"")
            assert snap.get("a", b"k") is None

    def test_snapshot_use_after_close(self, engine: StorageEngine) -> None:
        snap = engine.snapshot()
        with snap:
            pass
        with pytest.raises(StorageClosed):
            snap.get("a", b"k")
        with pytest.raises(StorageClosed):
            list(snap.scan("a"))
        snap.close()

    def test_snapshot_scan_outlives_writes(self, engine: StorageEngine) -> None:
        _put(engine, "a", {b"%04d" % i: b"old" for i in range(1000)}, sync=False)
        with engine.snapshot() as snap:
            it = snap.scan("a")
            first = [next(it) for _ in range(10)]
            engine.write(WriteBatch().delete_range("a", b"", b"9999"), sync=False)
            _put(engine, "a", {b"%04d" % i: b"new" for i in range(0, 1000, 2)}, sync=False)
            rest = list(it)
            assert len(first) + len(rest) == 1000
            assert all(v == b"old" for _, v in first + rest)

    def test_snapshot_read_on_another_thread_while_writes_continue(
        self, engine: StorageEngine
    ) -> None:
        """A view opened on one thread is read on another while the first keeps
        writing (the Raft host builds partition snapshots this way)."""
        _put(engine, "a", {b"%04d" % i: b"old" for i in range(2000)}, sync=False)
        snap = engine.snapshot()
        seen: list[list[tuple[bytes, bytes]]] = []
        failed: list[BaseException] = []

        def read() -> None:
            try:
                seen.append(list(snap.scan("a")))
            except BaseException as exc:  # reported below, on the test's thread
                failed.append(exc)
            finally:
                snap.close()

        t = threading.Thread(target=read)
        t.start()
        for i in range(0, 2000, 7):
            engine.write(WriteBatch().put("a", b"%04d" % i, b"new").delete("a", b"%04d" % (i + 1)))
        t.join(30)
        assert not t.is_alive() and not failed, failed
        assert seen[0] == [(b"%04d" % i, b"old") for i in range(2000)]

    # ------------------------------------------------------------------ concurrency

    def test_concurrent_writers_readers_snapshots(self, data_dir: Path) -> None:
        engine = self.open_engine(data_dir, sync=False)
        engine.create_namespace("c")
        rounds = 300
        errors: list[BaseException] = []
        done = threading.Event()

        def writer(offset: int) -> None:
            try:
                for i in range(rounds):
                    n = (i * 2 + offset).to_bytes(8, "big")
                    batch = WriteBatch().put("c", b"x", n).put("c", b"y", n)
                    batch.delete_range("c", b"z", b"z\xff").put("c", b"z" + n, n)
                    engine.write(batch)
            except BaseException as exc:
                errors.append(exc)

        def check(view: Iterator[tuple[bytes, bytes]]) -> None:
            items = dict(view)
            if not items:
                return
            zs = [k for k in items if k.startswith(b"z")]
            assert items[b"x"] == items[b"y"], items
            assert len(zs) == 1 and items[zs[0]] == items[b"x"], items

        def reader() -> None:
            try:
                while not done.is_set():
                    with engine.snapshot() as snap:
                        check(snap.scan("c"))
                        x, y = snap.get("c", b"x"), snap.get("c", b"y")
                        assert x == y
                    check(engine.scan("c"))
                    engine.get("c", b"x")
            except BaseException as exc:
                errors.append(exc)

        readers = [threading.Thread(target=reader) for _ in range(2)]
        writers = [threading.Thread(target=writer, args=(o,)) for o in (0, 1)]
        try:
            for t in readers + writers:
                t.start()
            for t in writers:
                t.join()
        finally:
            done.set()
            for t in readers:
                t.join()
        try:
            assert not errors, errors
            items = dict(engine.scan("c"))
            assert items[b"x"] == items[b"y"]
            assert len(items) == 3
            assert engine.stats().writes >= 2 * rounds
        finally:
            engine.close()

    # ------------------------------------------------------------------ bad input

    def test_bad_input_is_invalid_request(self, engine: StorageEngine) -> None:
        eng: Any = engine  # deliberately ill-typed calls
        batch: Any = WriteBatch()
        bad_calls: list[Any] = [
            lambda: eng.get("a", "str-key"),
            lambda: eng.get("a", b""),
            lambda: eng.get("a", None),
            lambda: eng.get("Bad Name", b"k"),
            lambda: eng.get("", b"k"),
            lambda: eng.get(b"a", b"k"),
            lambda: eng.create_namespace("UPPER"),
            lambda: eng.create_namespace("x" * 65),
            lambda: eng.create_namespace("sp ace"),
            lambda: eng.create_namespace(""),
            lambda: list(eng.scan("a", "s")),
            lambda: list(eng.scan("a", None, 5)),
            lambda: list(eng.scan("a", limit=-1)),
            lambda: list(eng.scan("a", limit="3")),
            lambda: list(eng.scan("Bad")),
            lambda: batch.put("a", "k", b"v"),
            lambda: batch.put("a", b"", b"v"),
            lambda: batch.put("a", b"k", "v"),
            lambda: batch.delete_range("a", b"b", b"a"),
        ]
        for call in bad_calls:
            with pytest.raises(InvalidRequest):
                call()
        assert engine.namespaces() == ["a", "b"]
        _put(engine, "a", {b"k": b"v"})
        assert engine.get("a", b"k") == b"v"

    # ------------------------------------------------------------------ close

    def test_use_after_close_raises_storage_closed(self, data_dir: Path) -> None:
        engine = self.open_engine(data_dir)
        engine.create_namespace("a")
        _put(engine, "a", {b"k": b"v"})
        snap = engine.snapshot()
        it = engine.scan("a")
        engine.close()
        engine.close()  # idempotent
        calls: list[Any] = [
            lambda: engine.get("a", b"k"),
            lambda: engine.write(WriteBatch().put("a", b"k", b"v")),
            lambda: list(engine.scan("a")),
            lambda: list(it),
            engine.snapshot,
            lambda: engine.create_namespace("n"),
            engine.namespaces,
            engine.stats,
            engine.sync,
            lambda: snap.get("a", b"k"),
            lambda: list(snap.scan("a")),
        ]
        for call in calls:
            with pytest.raises(StorageClosed):
                call()
        snap.close()

    # ------------------------------------------------------------------ stats

    def test_stats(self, data_dir: Path, engine: StorageEngine) -> None:
        before = engine.stats()
        n = 500
        _put(engine, "a", {b"%05d" % i: b"v" * 100 for i in range(n)}, sync=True)
        _put(engine, "b", {b"one": b"1"}, sync=False)
        engine.sync()
        stats = engine.stats()
        assert stats.backend == self.backend
        assert set(stats.keys) == {"a", "b"}
        if self.exact_key_counts:
            assert stats.keys == {"a": n, "b": 1}
        else:
            assert n // 2 <= stats.keys["a"] <= n * 2
        assert stats.writes >= before.writes + 2
        if self.durable:
            assert stats.syncs >= before.syncs + 2
        if self.on_disk:
            assert stats.disk_bytes > 0
            assert stats.path is not None
            assert Path(stats.path).resolve().is_relative_to((data_dir / self.backend).resolve())
            assert sorted(os.listdir(data_dir)) == [self.backend]
        else:
            assert stats.disk_bytes == 0
        if stats.capacity_bytes is not None:
            assert stats.capacity_bytes >= stats.disk_bytes or not self.on_disk

    # ------------------------------------------------------------------ durability

    def test_reopen_keeps_data_and_namespaces(self, data_dir: Path) -> None:
        self._require_durable()
        engine = self.open_engine(data_dir)
        for ns in ("a", "b", "empty"):
            engine.create_namespace(ns)
        model = {k: b"v" + k for k in _ODD_KEYS}
        _put(engine, "a", model, sync=True)
        _put(engine, "b", {b"unsynced": b"1"}, sync=False)
        engine.write(WriteBatch().delete_range("a", b"a", b"b").delete("a", b"\xff"))
        engine.close()
        expect = {k: v for k, v in model.items() if not (b"a" <= k < b"b") and k != b"\xff"}
        engine = self.open_engine(data_dir)
        try:
            assert engine.namespaces() == ["a", "b", "empty"]
            assert dict(engine.scan("a")) == expect
            assert engine.get("b", b"unsynced") == b"1"
            assert list(engine.scan("empty")) == []
            _put(engine, "a", {b"again": b"1"})
        finally:
            engine.close()
        engine = self.open_engine(data_dir)
        try:
            assert engine.get("a", b"again") == b"1"
        finally:
            engine.close()

    def test_reopen_with_sync_off_keeps_data_after_close(self, data_dir: Path) -> None:
        self._require_durable()
        engine = self.open_engine(data_dir, sync=False)
        engine.create_namespace("a")
        for i in range(50):
            _put(engine, "a", {b"%03d" % i: b"v"}, sync=None)
        engine.close()
        engine = self.open_engine(data_dir, sync=False)
        try:
            assert len(list(engine.scan("a"))) == 50
        finally:
            engine.close()

    def _run_child(self, data_dir: Path, mode: str, count: int) -> tuple[int, int]:
        """Run the kill-test writer; return (acknowledged batches, child return code)."""
        args = [
            sys.executable,
            "-m",
            "atoll.testing._storage_child",
            self.plugin,
            self.backend,
            str(data_dir),
            json.dumps(self.engine_options),
            mode,
            str(count),
        ]
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line.strip())
            lines.put(None)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        acked = -1
        killed_by_parent = False
        try:
            while True:
                try:
                    line = lines.get(timeout=_CHILD_DEADLINE_S)
                except queue.Empty:
                    pytest.fail(f"kill-test child made no progress for {_CHILD_DEADLINE_S}s")
                if line is None:
                    break
                if line.startswith("ack "):
                    acked = int(line.split()[1])
                elif line == "ready" and mode == "loop":
                    # Kill it while it is in the middle of more synced writes.
                    proc.send_signal(signal.SIGKILL)
                    killed_by_parent = True
        finally:
            if proc.poll() is None and not killed_by_parent:
                proc.kill()
            rc = proc.wait(timeout=_CHILD_DEADLINE_S)
            reader.join(timeout=_CHILD_DEADLINE_S)
        if rc != -signal.SIGKILL:
            stderr = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"kill-test child exited with {rc}, not SIGKILL:\n{stderr}")
        if proc.stderr:
            proc.stderr.close()
        return acked + 1, rc

    def _check_after_kill(self, data_dir: Path, acked: int) -> None:
        engine = self.open_engine(data_dir)
        try:
            assert KILL_NAMESPACE in engine.namespaces()
            for i in range(acked):
                for key in batch_keys(i):
                    assert engine.get(KILL_NAMESPACE, key) == batch_value(i), (i, key)
            # Batches after the last acknowledged one: all of a batch or none of it, and
            # at most the one batch that was in flight when the process died.
            present = 0
            for i in range(acked, acked + 3):
                found = [engine.get(KILL_NAMESPACE, key) for key in batch_keys(i)]
                if any(v is not None for v in found):
                    assert found == [batch_value(i)] * 3, (i, found)
                    present += 1
            assert present <= 1
            _put(engine, KILL_NAMESPACE, {b"after-recovery": b"1"})
        finally:
            engine.close()

    def test_synced_writes_survive_sigkill(self, data_dir: Path) -> None:
        self._require_durable()
        acked, _ = self._run_child(data_dir, "self", 40)
        assert acked == 40
        self._check_after_kill(data_dir, acked)

    def test_synced_writes_survive_sigkill_mid_write(self, data_dir: Path) -> None:
        self._require_durable()
        acked, _ = self._run_child(data_dir, "loop", 20)
        assert acked >= 20
        self._check_after_kill(data_dir, acked)

    # ------------------------------------------------------------------ optional capabilities

    def test_corrupt_files_raise_corrupt_data(self, data_dir: Path) -> None:
        if not self.can_corrupt:
            pytest.skip(f"{type(self).__name__} declares can_corrupt = False")
        engine = self.open_engine(data_dir)
        engine.create_namespace("a")
        _put(engine, "a", {b"%04d" % i: b"v" * 200 for i in range(200)})
        engine.close()
        self.corrupt_files(data_dir)
        with pytest.raises(CorruptData) as info:
            engine = self.open_engine(data_dir)
            # Some engines find the damage only when they read the data.
            list(engine.scan("a"))
            engine.close()
        assert str(data_dir) in str(info.value)

    def test_disk_full_raises_disk_full(self, tmp_path: Path) -> None:
        if not self.can_fill_disk:
            pytest.skip(f"{type(self).__name__} declares can_fill_disk = False")
        with self.full_disk_engine(tmp_path) as engine:
            engine.create_namespace("d")
            value = os.urandom(64 * 1024)
            committed = 0
            with pytest.raises(DiskFull):
                for i in range(2000):  # 2000 x 256 KiB: far beyond any test disk
                    batch = WriteBatch()
                    for j in range(4):
                        batch.put("d", b"%06d-%d" % (i, j), value)
                    engine.write(batch, sync=True)
                    committed = i + 1
            assert committed > 0, "the test disk must hold at least one batch"
            for i in range(committed):
                assert engine.get("d", b"%06d-0" % i) == value
            failed = [engine.get("d", b"%06d-%d" % (committed, j)) for j in range(4)]
            assert failed == [None] * 4
            # Reads keep working on a full disk.
            assert sum(1 for _ in engine.scan("d", limit=10)) == min(10, committed * 4)

    # ------------------------------------------------------------------ model check

    def test_state_machine_against_dict_model(self, tmp_path: Path) -> None:
        examples = int(os.environ.get("ATOLL_STORAGE_STATEFUL_EXAMPLES", self.stateful_examples))
        steps = int(os.environ.get("ATOLL_STORAGE_STATEFUL_STEPS", self.stateful_steps))
        run_storage_state_machine(
            lambda path, sync: self.open_engine(path, sync=sync),
            tmp_path,
            durable=self.durable,
            max_examples=examples,
            steps=steps,
        )
