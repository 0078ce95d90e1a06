"""The in-memory storage engine: sorted maps per namespace with copy-on-write snapshots.

Owns: :class:`MemoryEngine` and :class:`MemorySnapshot`, an implementation of the
:class:`atoll.core.StorageEngine` contract that keeps everything in process memory.
Never: touches the disk. Closing (or losing) the process loses every write; ``sync`` is
accepted and counted but makes nothing durable. Use it for tests and simulation only.

Concurrency model: one lock guards the namespace table. Each namespace points at a
:class:`_Version` (a ``SortedDict`` plus a count of readers pinning it). Readers that
outlive a single call (snapshots, scan iterators) pin the current version; a writer that
finds the version pinned copies it before mutating, so pinned readers keep an immutable
view (multi-version concurrency at namespace granularity) and never block writers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from sortedcontainers import SortedDict  # type: ignore[import-untyped]

from atoll.core import (
    MAX_KEY_BYTES,
    InvalidRequest,
    StorageClosed,
    StorageConfig,
    StorageStats,
    WriteBatch,
    check_namespace,
)
from atoll.core.storagekit import (
    OP_DELETE,
    OP_DELETE_RANGE,
    OP_PUT,
    check_batch,
    check_key,
    check_scan_args,
)

__all__ = ["BACKEND", "MemoryEngine", "MemorySnapshot"]

BACKEND = "memory"

_SCAN_CHUNK = 256
"""Pairs a scan copies out of a pinned version per step (bounds the work per ``next``)."""


class _Version:
    """One immutable-while-pinned generation of a namespace's sorted map."""

    __slots__ = ("data", "readers")

    def __init__(self, data: Any) -> None:
        self.data: Any = data  # SortedDict[bytes, bytes]
        self.readers = 0


def _range_keys(
    data: Any, start: bytes | None, end: bytes | None, reverse: bool
) -> Iterator[bytes]:
    keys: Iterator[bytes] = data.irange(
        minimum=start, maximum=end, inclusive=(True, False), reverse=reverse
    )
    return keys


def _scan_version(
    version: _Version,
    *,
    start: bytes | None,
    end: bytes | None,
    reverse: bool,
    limit: int | None,
    check_open: Any,
) -> Iterator[tuple[bytes, bytes]]:
    data = version.data
    for produced, key in enumerate(_range_keys(data, start, end, reverse)):
        if limit is not None and produced >= limit:
            return
        if produced % _SCAN_CHUNK == 0:
            check_open()
        yield key, data[key]


class MemoryEngine:
    """A :class:`atoll.core.StorageEngine` kept entirely in memory (no durability).

    :param config: the ``[storage]`` section; ``sync`` only selects the default of
        ``write(sync=None)`` (counted in :meth:`stats`, never durable).
    """

    def __init__(self, config: StorageConfig | None = None) -> None:
        self._config = config or StorageConfig(backend=BACKEND)
        self._lock = threading.Lock()
        self._versions: dict[str, _Version] = {}
        self._closed = False
        self._writes = 0
        self._syncs = 0

    # ------------------------------------------------------------------ helpers

    @property
    def backend(self) -> str:
        """Always ``"memory"``."""
        return BACKEND

    @property
    def max_key_bytes(self) -> int:
        """The engine-level key limit (:data:`atoll.core.MAX_KEY_BYTES`)."""
        return MAX_KEY_BYTES

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("memory storage engine is closed")

    def _version(self, namespace: str) -> _Version:
        """The current version of ``namespace`` (caller holds the lock)."""
        try:
            return self._versions[namespace]
        except KeyError:
            check_namespace(namespace)
            raise InvalidRequest(
                f"namespace {namespace!r} does not exist (create_namespace it first; "
                f"existing: {sorted(self._versions)})"
            ) from None

    def _writable(self, namespace: str) -> Any:
        """The map of ``namespace``, copied first if a reader pins it (caller holds lock)."""
        version = self._versions[namespace]
        if version.readers:
            version = _Version(version.data.copy())
            self._versions[namespace] = version
        return version.data

    def _release(self, versions: list[_Version]) -> None:
        with self._lock:
            for v in versions:
                v.readers -= 1

    # ------------------------------------------------------------------ namespaces

    def create_namespace(self, name: str) -> None:
        """Create ``name`` if missing (idempotent)."""
        check_namespace(name)
        with self._lock:
            self._check_open()
            if name not in self._versions:
                self._versions[name] = _Version(SortedDict())

    def namespaces(self) -> list[str]:
        """Existing namespace names, sorted."""
        with self._lock:
            self._check_open()
            return sorted(self._versions)

    # ------------------------------------------------------------------ reads

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """The current value of ``key`` in ``namespace``, or None."""
        k = check_key(key)
        with self._lock:
            self._check_open()
            value: bytes | None = self._version(namespace).data.get(k)
            return value

    def scan(
        self,
        namespace: str,
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` in ``[start, end)``; the view is pinned at first ``next``."""
        s, e, lim = check_scan_args(start, end, limit)
        with self._lock:
            self._check_open()
            self._version(namespace)
        return self._scan(namespace, s, e, reverse, lim)

    def _scan(
        self,
        namespace: str,
        start: bytes | None,
        end: bytes | None,
        reverse: bool,
        limit: int | None,
    ) -> Iterator[tuple[bytes, bytes]]:
        if limit == 0 or (start is not None and end is not None and start >= end):
            return
        with self._lock:
            self._check_open()
            version = self._version(namespace)
            version.readers += 1
        try:
            yield from _scan_version(
                version,
                start=start,
                end=end,
                reverse=reverse,
                limit=limit,
                check_open=self._check_open,
            )
        finally:
            self._release([version])

    def snapshot(self) -> MemorySnapshot:
        """A point-in-time view of every namespace existing now."""
        with self._lock:
            self._check_open()
            pinned = dict(self._versions)
            for v in pinned.values():
                v.readers += 1
        return MemorySnapshot(self, pinned)

    # ------------------------------------------------------------------ writes

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        """Apply ``batch`` atomically (validated fully before anything changes)."""
        do_sync = self._config.sync if sync is None else bool(sync)
        with self._lock:
            self._check_open()
            ops = check_batch(batch, self._versions)
            maps: dict[str, Any] = {}
            for op, ns, k, v in ops:
                data = maps.get(ns)
                if data is None:
                    data = maps[ns] = self._writable(ns)
                if op == OP_PUT:
                    data[k] = v
                elif op == OP_DELETE:
                    data.pop(k, None)
                elif op == OP_DELETE_RANGE:
                    for key in list(data.irange(k, v, inclusive=(True, False))):
                        del data[key]
            self._writes += 1
            if do_sync:
                self._syncs += 1

    def sync(self) -> None:
        """Nothing to flush: memory is never durable. Counted in :meth:`stats`."""
        with self._lock:
            self._check_open()
            self._syncs += 1

    # ------------------------------------------------------------------ admin

    def stats(self) -> StorageStats:
        """Exact key counts; ``disk_bytes`` is 0."""
        with self._lock:
            self._check_open()
            keys = {ns: len(v.data) for ns, v in self._versions.items()}
            return StorageStats(
                backend=BACKEND,
                path=None,
                disk_bytes=0,
                keys=keys,
                capacity_bytes=None,
                writes=self._writes,
                syncs=self._syncs,
            )

    def close(self) -> None:
        """Drop all data. Idempotent; later calls raise StorageClosed."""
        with self._lock:
            self._closed = True
            self._versions = {}

    def __enter__(self) -> MemoryEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._versions)} namespaces"
        return f"<MemoryEngine {state}>"


class MemorySnapshot:
    """A read-only, point-in-time view of a :class:`MemoryEngine`. Close it when done."""

    def __init__(self, engine: MemoryEngine, versions: dict[str, _Version]) -> None:
        self._engine = engine
        self._versions: dict[str, _Version] | None = versions
        self._lock = threading.Lock()

    def _pinned(self, namespace: str) -> _Version:
        versions = self._versions
        if versions is None:
            raise StorageClosed("memory snapshot is closed")
        self._engine._check_open()
        try:
            return versions[namespace]
        except KeyError:
            check_namespace(namespace)
            raise InvalidRequest(
                f"namespace {namespace!r} did not exist when the snapshot was taken"
            ) from None

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """The value of ``key`` as of the snapshot, or None."""
        k = check_key(key)
        value: bytes | None = self._pinned(namespace).data.get(k)
        return value

    def scan(
        self,
        namespace: str,
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` in ``[start, end)`` as of the snapshot."""
        s, e, lim = check_scan_args(start, end, limit)
        version = self._pinned(namespace)
        if lim == 0 or (s is not None and e is not None and s >= e):
            return iter(())
        return self._scan(namespace, version, start=s, end=e, reverse=reverse, limit=lim)

    def _scan(
        self,
        namespace: str,
        version: _Version,
        *,
        start: bytes | None,
        end: bytes | None,
        reverse: bool,
        limit: int | None,
    ) -> Iterator[tuple[bytes, bytes]]:
        def check() -> None:
            self._pinned(namespace)

        yield from _scan_version(
            version, start=start, end=end, reverse=reverse, limit=limit, check_open=check
        )

    def close(self) -> None:
        """Unpin the snapshot's versions. Idempotent."""
        with self._lock:
            versions, self._versions = self._versions, None
        if versions is not None:
            self._engine._release(list(versions.values()))

    def __enter__(self) -> MemorySnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A leaked snapshot would otherwise make every later write copy its namespace.
        if getattr(self, "_versions", None) is not None:
            self.close()
