"""The RocksDB storage engine (rocksdict, raw mode): namespaces as column families.

Owns: :class:`RocksdbEngine` and :class:`RocksdbSnapshot`, the RocksDB tuning, and the
mapping of RocksDB statuses onto Atoll errors ("No space left" -> DiskFull,
"Corruption" -> CorruptData, anything else -> StorageError; all name the path).
Never: uses the default column family for data (namespace ``x`` is column family
``ns.x``, so a namespace called ``default`` is fine), or lets a rocksdict exception out.

Files live in ``<data_dir>/rocksdb/``. The write-ahead log is always on: a
``write(sync=True)`` returns after the WAL is fsynced. It writes the batch without sync,
then syncs the WAL (``FlushWAL(true)``): rocksdict holds the GIL for the whole of a
synced ``Write`` (the fsync included), which stalled the event loop of a node for every
log fsync, while ``flush_wal`` releases it. (The batch is readable from the moment it is
written, before the sync ends, where a synced ``Write`` hides it until then; what the
Raft host writes this way is its log and hard state, which nothing acknowledges before
the call returns.) ``[storage] sync = false`` is UNSAFE: writes are acknowledged from
the OS page cache and an OS crash or power loss can lose them (a process crash loses
nothing, the WAL is in the page cache).

Snapshots. rocksdict 0.3.29's ``Snapshot.iter`` ignores the snapshot (it reads the live
database), so a snapshot here pins one RocksDB iterator per column family instead:
an iterator reads the implicit point-in-time view it was created at (the same
sequence-number mechanism as ``GetSnapshot``). They are created together under the
engine's write lock, so they agree with each other. Point reads on a snapshot seek its
iterator; scans re-seek per chunk so interleaved scans of one snapshot stay independent.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from rocksdict import (
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    WriteOptions,
)
from rocksdict import WriteBatch as RocksWriteBatch

from atoll.core import (
    MAX_KEY_BYTES,
    AtollError,
    ConfigError,
    CorruptData,
    DiskFull,
    InvalidRequest,
    StorageClosed,
    StorageConfig,
    StorageError,
    StorageStats,
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

__all__ = ["BACKEND", "RocksdbEngine", "RocksdbOptions", "RocksdbSnapshot"]

BACKEND = "rocksdb"
_CF_PREFIX = "ns."
_MIB = 1024 * 1024
_SCAN_CHUNK = 256


class RocksdbOptions:
    """``[storage] options`` understood by the RocksDB backend (all optional).

    * ``block_cache_mb`` (int, default 64): shared LRU block cache.
    * ``write_buffer_mb`` (int, default 32): memtable size per column family.
    * ``max_background_jobs`` (int, default 2): flush and compaction threads.
    * ``compression`` (str, default ``"lz4"``): ``none``, ``lz4``, ``zstd`` or ``snappy``.
    * ``write_stall_timeout_s`` (float, default 60): how long a write waits out a RocksDB
      write stall before failing with StorageError.
    """

    __slots__ = (
        "block_cache_mb",
        "compression",
        "max_background_jobs",
        "write_buffer_mb",
        "write_stall_timeout_s",
    )

    _COMPRESSION = {
        "none": DBCompressionType.none,
        "lz4": DBCompressionType.lz4,
        "zstd": DBCompressionType.zstd,
        "snappy": DBCompressionType.snappy,
    }

    def __init__(self, config: StorageConfig) -> None:
        opts = dict(config.options)
        known = {
            "block_cache_mb",
            "write_buffer_mb",
            "max_background_jobs",
            "compression",
            "write_stall_timeout_s",
        }
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ConfigError(
                f"storage.options: unknown RocksDB option(s) {unknown} "
                f"(accepted: {', '.join(sorted(known))})"
            )
        self.block_cache_mb = _positive_int("block_cache_mb", opts.get("block_cache_mb", 64))
        self.write_buffer_mb = _positive_int("write_buffer_mb", opts.get("write_buffer_mb", 32))
        self.max_background_jobs = _positive_int(
            "max_background_jobs", opts.get("max_background_jobs", 2)
        )
        compression = opts.get("compression", "lz4")
        if compression not in self._COMPRESSION:
            raise ConfigError(
                f"storage.options.compression = {compression!r} is not valid "
                f"(accepted: {', '.join(self._COMPRESSION)})"
            )
        self.compression: str = compression
        stall = opts.get("write_stall_timeout_s", 60.0)
        if isinstance(stall, bool) or not isinstance(stall, int | float) or stall <= 0:
            raise ConfigError(
                f"storage.options.write_stall_timeout_s = {stall!r}: expected seconds > 0"
            )
        self.write_stall_timeout_s = float(stall)

    def db_options(self, cache: Cache) -> Options:
        """Options for the database and for every column family."""
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_paranoid_checks(True)
        opts.set_max_background_jobs(self.max_background_jobs)
        opts.set_write_buffer_size(self.write_buffer_mb * _MIB)
        opts.set_max_write_buffer_number(3)
        opts.set_level_compaction_dynamic_level_bytes(True)
        opts.set_bytes_per_sync(_MIB)
        opts.set_wal_bytes_per_sync(_MIB)
        opts.set_keep_log_file_num(4)
        opts.set_max_total_wal_size(4 * self.write_buffer_mb * _MIB)
        opts.set_compression_type(self._COMPRESSION[self.compression]())
        table = BlockBasedOptions()
        table.set_block_cache(cache)
        table.set_bloom_filter(10, False)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        opts.set_block_based_table_factory(table)
        return opts


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"storage.options.{name} = {value!r}: expected an integer > 0")
    return value


def _map_error(exc: BaseException, path: str, what: str, closed: bool) -> NoReturn:
    """Raise the Atoll error for a rocksdict exception (they carry RocksDB's status text)."""
    if isinstance(exc, AtollError):
        raise exc
    text = str(exc)
    where = f"RocksDB at {path}: cannot {what}"
    if closed or "already closed" in text.lower():
        raise StorageClosed(f"{where}: the engine is closed") from exc
    if "No space left" in text or "ENOSPC" in text or "Disk quota" in text:
        raise DiskFull(f"{where}: the disk is full ({text})") from exc
    if "Corruption" in text or "corrupt" in text.lower():
        raise CorruptData(f"{where}: the files are corrupt ({text})") from exc
    raise StorageError(f"{where}: {text}") from exc


class _CallGate:
    """Counts threads inside rocksdict calls so ``close`` never pulls the DB from under one."""

    __slots__ = ("_busy", "_cond", "_lock", "closed")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # hot paths use the raw lock; close waits on _cond
        self._cond = threading.Condition(self._lock)
        self._busy = 0
        self.closed = False

    def enter(self) -> None:
        with self._lock:
            if self.closed:
                raise StorageClosed("RocksDB storage engine is closed")
            self._busy += 1

    def leave(self) -> None:
        with self._lock:
            self._busy -= 1
            if self._busy == 0 and self.closed:
                self._cond.notify_all()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._cond.wait_for(lambda: self._busy == 0)


class _WriteGate:
    """Lets writers run concurrently (group commit) but lets a snapshot wait them out.

    A snapshot's per-namespace iterators must be created with no batch half-published
    between them, so :meth:`freeze` blocks new writes and waits for in-flight ones.
    """

    __slots__ = ("_cond", "_frozen", "_lock", "_writing")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._writing = 0
        self._frozen = False

    def enter(self) -> None:
        with self._lock:
            while self._frozen:
                self._cond.wait()
            self._writing += 1

    def leave(self) -> None:
        with self._lock:
            self._writing -= 1
            if self._writing == 0 and self._frozen:
                self._cond.notify_all()

    def freeze(self) -> None:
        with self._cond:
            self._frozen = True
            self._cond.wait_for(lambda: self._writing == 0)

    def thaw(self) -> None:
        with self._cond:
            self._frozen = False
            self._cond.notify_all()


class _Pinned:
    """Iterators a reader holds; the engine clears them on close.

    A live RocksDB iterator keeps the database open (and its LOCK held) even after
    ``close()``, so nothing but this holder may keep a reference between calls.
    """

    __slots__ = ("__weakref__", "iterators")

    def __init__(self, iterators: dict[str, Any]) -> None:
        self.iterators: dict[str, Any] | None = iterators


class _Namespace:
    """A column family: its rdict view (reads, iterators) and handle (batches)."""

    __slots__ = ("handle", "view")

    def __init__(self, view: Rdict, handle: Any) -> None:
        self.view = view
        self.handle = handle


def _read_chunk(
    it: Any,
    after: bytes | None,
    start: bytes | None,
    end: bytes | None,
    reverse: bool,
    count: int,
) -> list[tuple[bytes, bytes]]:
    """Up to ``count`` pairs of ``[start, end)`` strictly beyond ``after`` from ``it``."""
    out: list[tuple[bytes, bytes]] = []
    if not reverse:
        if after is not None:
            it.seek(after)
            if it.valid() and it.key() == after:
                it.next()
        elif start:
            it.seek(start)
        else:
            it.seek_to_first()
        while it.valid() and len(out) < count:
            k = it.key()
            if end is not None and k >= end:
                break
            out.append((k, it.value()))
            it.next()
    else:
        bound = after if after is not None else end
        if bound is None:
            it.seek_to_last()
        else:
            it.seek_for_prev(bound)
            if it.valid() and it.key() >= bound:
                it.prev()
        while it.valid() and len(out) < count:
            k = it.key()
            if start is not None and k < start:
                break
            out.append((k, it.value()))
            it.prev()
    it.status()  # raises if the iterator stopped on an error rather than at the end
    return out


class RocksdbEngine:
    """A :class:`atoll.core.StorageEngine` on RocksDB.

    :param config: the ``[storage]`` section (``sync``, ``options``).
    :param data_dir: the node's data directory; files go to ``<data_dir>/rocksdb/``.
    :raises CorruptData: the files exist but RocksDB finds them corrupt.
    :raises StorageError: the directory is locked by another process or unusable.
    """

    def __init__(self, config: StorageConfig, data_dir: str) -> None:
        self._config = config
        self._opts = RocksdbOptions(config)
        self._path = os.path.join(os.path.abspath(data_dir), BACKEND)
        self._write_lock = threading.Lock()  # namespace creation, snapshots, close
        self._stats_lock = threading.Lock()
        self._gate = _CallGate()
        self._writes = 0
        self._syncs = 0
        self._writers = _WriteGate()
        self._pinned: weakref.WeakSet[_Pinned] = weakref.WeakSet()
        self._cache = Cache(self._opts.block_cache_mb * _MIB)
        # no_slowdown: a stalled write returns "Incomplete" at once instead of waiting
        # inside RocksDB with the GIL held; _write_with_backoff waits in Python instead.
        # Every write is unsynced; a synced one then syncs the WAL (see the module
        # docstring: a synced Write would hold the GIL through the fsync).
        self._nosync_opts = WriteOptions()
        self._nosync_opts.sync = False
        self._nosync_opts.no_slowdown = True
        try:
            os.makedirs(self._path, exist_ok=True)
            existing = ["default"]
            if os.path.exists(os.path.join(self._path, "CURRENT")):
                existing = Rdict.list_cf(self._path, self._cf_options())
            cfs = {name: self._cf_options() for name in existing if name != "default"}
            self._db = Rdict(self._path, self._cf_options(), column_families=cfs)
            self._ns: dict[str, _Namespace] = {}
            for cf in existing:
                if cf.startswith(_CF_PREFIX):
                    self._ns[cf[len(_CF_PREFIX) :]] = self._namespace_view(cf)
        except OSError as exc:
            _map_error(exc, self._path, "open", False)
        except Exception as exc:
            if "lock" in str(exc).lower() and "Corruption" not in str(exc):
                raise StorageError(
                    f"RocksDB at {self._path}: cannot open: it is locked by another "
                    f"engine or process ({exc})"
                ) from exc
            _map_error(exc, self._path, "open", False)

    def _cf_options(self) -> Options:
        return self._opts.db_options(self._cache)

    def _namespace_view(self, cf: str) -> _Namespace:
        return _Namespace(self._db.get_column_family(cf), self._db.get_column_family_handle(cf))

    def _fail(self, exc: BaseException, what: str) -> NoReturn:
        _map_error(exc, self._path, what, self._gate.closed)

    def _ns_of(self, namespace: str) -> _Namespace:
        try:
            return self._ns[namespace]
        except KeyError:
            self._check_open()  # close() empties the table
            check_namespace(namespace)
            raise InvalidRequest(
                f"namespace {namespace!r} does not exist (create_namespace it first)"
            ) from None

    def _check_open(self) -> None:
        if self._gate.closed:
            raise StorageClosed("RocksDB storage engine is closed")

    # ------------------------------------------------------------------ properties

    @property
    def backend(self) -> str:
        """Always ``"rocksdb"``."""
        return BACKEND

    @property
    def max_key_bytes(self) -> int:
        """The engine-level key limit (:data:`atoll.core.MAX_KEY_BYTES`)."""
        return MAX_KEY_BYTES

    @property
    def path(self) -> str:
        """The RocksDB directory."""
        return self._path

    # ------------------------------------------------------------------ namespaces

    def create_namespace(self, name: str) -> None:
        """Create column family ``ns.<name>`` if missing. Idempotent and durable."""
        check_namespace(name)
        with self._write_lock:
            self._check_open()
            if name in self._ns:
                return
            self._gate.enter()
            try:
                cf = _CF_PREFIX + name
                self._db.create_column_family(cf, self._cf_options())
                view = self._namespace_view(cf)
            except Exception as exc:
                self._fail(exc, f"create namespace {name!r}")
            finally:
                self._gate.leave()
            self._ns = {**self._ns, name: view}  # replaced, never mutated (snapshots)

    def namespaces(self) -> list[str]:
        """Existing namespace names, sorted."""
        self._check_open()
        return sorted(self._ns)

    # ------------------------------------------------------------------ reads

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """The current value of ``key`` in ``namespace``, or None."""
        k = check_key(key)
        ns = self._ns_of(namespace)
        self._gate.enter()
        try:
            value: bytes | None = ns.view.get(k)
            return value
        except Exception as exc:
            self._fail(exc, "read")
        finally:
            self._gate.leave()

    def scan(
        self,
        namespace: str,
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` in ``[start, end)`` from one RocksDB iterator."""
        s, e, lim = check_scan_args(start, end, limit)
        self._check_open()
        ns = self._ns_of(namespace)
        return self._scan(ns, s, e, reverse, lim)

    def _scan(
        self,
        ns: _Namespace,
        start: bytes | None,
        end: bytes | None,
        reverse: bool,
        limit: int | None,
    ) -> Iterator[tuple[bytes, bytes]]:
        if limit == 0 or (start is not None and end is not None and start >= end):
            return
        # Bounds are checked in _read_chunk, not with ReadOptions: in rocksdict 0.3.29
        # an iterator given only a lower bound returns nothing at all.
        self._gate.enter()
        try:
            pinned = _Pinned({"": ns.view.iter(ReadOptions())})
            self._pinned.add(pinned)
        except Exception as exc:
            self._fail(exc, "scan")
        finally:
            self._gate.leave()
        del ns  # the column family view holds the database open; only `pinned` may
        try:
            yield from _scan_pinned(self, pinned, "", start, end, reverse, limit, None)
        finally:
            pinned.iterators = None

    def snapshot(self) -> RocksdbSnapshot:
        """A point-in-time view of every namespace existing now. Close it when done."""
        with self._write_lock:  # no namespace creation meanwhile
            self._check_open()
            namespaces = self._ns
            self._gate.enter()
            self._writers.freeze()  # no batch half-published between the iterators
            try:
                iterators = {name: ns.view.iter(ReadOptions()) for name, ns in namespaces.items()}
            except Exception as exc:
                self._fail(exc, "take a snapshot")
            finally:
                self._writers.thaw()
                self._gate.leave()
            pinned = _Pinned(iterators)
            self._pinned.add(pinned)
            return RocksdbSnapshot(self, pinned)

    # ------------------------------------------------------------------ writes

    def write(self, batch: Any, *, sync: bool | None = None) -> None:
        """Apply ``batch`` atomically through one RocksDB WriteBatch (WAL, then memtable).

        Writers do not serialize on a Python lock, so concurrent writes share RocksDB's
        group commit; a synced one then syncs the WAL, which makes every write before it
        durable too (``flush_wal``, GIL released: see the module docstring). Snapshots
        briefly hold the write lock to stay consistent.
        """
        self._check_open()
        namespaces = self._ns
        ops = check_batch(batch, namespaces)
        if not ops:
            return
        do_sync = self._config.sync if sync is None else bool(sync)

        def build() -> RocksWriteBatch:
            # rocksdict consumes a WriteBatch on write (even a stalled one): one per try.
            wb = RocksWriteBatch(raw_mode=True)
            for op, ns, a, b in ops:
                handle = namespaces[ns].handle
                if op == OP_PUT:
                    wb.put(a, b, handle)
                elif op == OP_DELETE:
                    wb.delete(a, handle)
                elif op == OP_DELETE_RANGE:
                    wb.delete_range(a, b, handle)
            return wb

        self._write_with_backoff(build, self._nosync_opts)
        if do_sync:
            self._sync_wal()
        with self._stats_lock:
            self._writes += 1
            if do_sync:
                self._syncs += 1

    def _write_with_backoff(self, build: Callable[[], RocksWriteBatch], opts: WriteOptions) -> None:
        """Write ``build()``; wait out write stalls in Python (GIL released), up to a timeout.

        A stall on a full disk never ends (RocksDB's recovery waits for free space), so
        a stall with less free space than one memtable raises DiskFull at once.
        """
        delay = 0.001
        deadline: float | None = None
        while True:
            self._gate.enter()
            self._writers.enter()
            try:
                self._db.write(build(), opts)
                return
            except Exception as exc:
                if "incomplete" not in str(exc).lower():  # "Result incomplete: Write stall"
                    self._fail(exc, "write")
            finally:
                self._writers.leave()
                self._gate.leave()
            free = self._free_bytes()
            if free is not None and free < self._opts.write_buffer_mb * _MIB:
                raise DiskFull(
                    f"RocksDB at {self._path}: cannot write: writes are stalled and only "
                    f"{free} bytes are free on its file system"
                )
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._opts.write_stall_timeout_s
            elif now >= deadline:
                raise StorageError(
                    f"RocksDB at {self._path}: cannot write: writes stalled for "
                    f"{self._opts.write_stall_timeout_s}s (compaction backlog or a failing "
                    "disk; options.write_stall_timeout_s)"
                )
            time.sleep(delay)  # back-off between retries of a stalled write, bounded above
            delay = min(delay * 2, 0.05)

    def _sync_wal(self) -> None:
        """Fsync the WAL (every live WAL file not yet synced); the GIL is released
        meanwhile."""
        self._gate.enter()
        try:
            self._db.flush_wal(True)
        except Exception as exc:
            self._fail(exc, "sync")
        finally:
            self._gate.leave()

    def _free_bytes(self) -> int | None:
        try:
            st = os.statvfs(self._path)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def sync(self) -> None:
        """Fsync the write-ahead log: everything written so far becomes durable."""
        self._sync_wal()
        with self._stats_lock:
            self._syncs += 1

    # ------------------------------------------------------------------ admin

    def stats(self) -> StorageStats:
        """Estimated key counts (RocksDB's ``estimate-num-keys``), live file bytes."""
        self._check_open()
        self._gate.enter()
        try:
            keys = {
                name: int(ns.view.property_int_value("rocksdb.estimate-num-keys") or 0)
                for name, ns in self._ns.items()
            }
        except Exception as exc:
            self._fail(exc, "read statistics")
        finally:
            self._gate.leave()
        disk = 0
        for entry in os.scandir(self._path):
            try:
                if entry.is_file(follow_symlinks=False):
                    disk += entry.stat(follow_symlinks=False).st_blocks * 512
            except FileNotFoundError:
                continue  # compaction removed it meanwhile
        with self._stats_lock:
            writes, syncs = self._writes, self._syncs
        return StorageStats(
            backend=BACKEND,
            path=self._path,
            disk_bytes=disk,
            keys=keys,
            capacity_bytes=None,
            writes=writes,
            syncs=syncs,
        )

    def close(self) -> None:
        """Fsync the WAL, release snapshots, close the database. Idempotent.

        :raises StorageError: the database was in an error state (a full disk makes
            RocksDB refuse further writes until reopened); it is closed regardless.
        """
        with self._write_lock:
            if self._gate.closed:
                return
            self._gate.close()
            for pinned in list(self._pinned):
                pinned.iterators = None  # a live iterator would keep the DB open
            try:
                self._db.flush_wal(True)
            except Exception:
                pass  # a full or failed disk must not stop the close; writes reported it
            self._ns = {}
            try:
                self._db.close()
            except Exception as exc:
                # Closed either way; report why the final flush failed (e.g. a full disk).
                _map_error(exc, self._path, "close cleanly", False)

    def __enter__(self) -> RocksdbEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._gate.closed else "open"
        return f"<RocksdbEngine {self._path} {state}>"


def _scan_pinned(
    engine: RocksdbEngine,
    pinned: _Pinned,
    name: str,
    start: bytes | None,
    end: bytes | None,
    reverse: bool,
    limit: int | None,
    lock: threading.Lock | None,
) -> Iterator[tuple[bytes, bytes]]:
    """Read ``pinned.iterators[name]`` chunk by chunk (re-seeking each time)."""
    remaining = limit
    after: bytes | None = None
    while remaining is None or remaining > 0:
        want = _SCAN_CHUNK if remaining is None else min(_SCAN_CHUNK, remaining)
        with lock if lock is not None else contextlib.nullcontext():
            iterators = pinned.iterators
            if iterators is None:
                engine._check_open()
                raise StorageClosed("RocksDB snapshot is closed")
            engine._gate.enter()
            try:
                chunk = _read_chunk(iterators[name], after, start, end, reverse, want)
            except Exception as exc:
                engine._fail(exc, "scan")
            finally:
                engine._gate.leave()
            del iterators
        yield from chunk
        if len(chunk) < want:
            return
        after = chunk[-1][0]
        if remaining is not None:
            remaining -= len(chunk)


class RocksdbSnapshot:
    """A point-in-time view of a :class:`RocksdbEngine`: one pinned iterator per namespace."""

    def __init__(self, engine: RocksdbEngine, pinned: _Pinned) -> None:
        self._engine = engine
        self._pinned = pinned
        self._names = frozenset(pinned.iterators or ())
        self._lock = threading.Lock()  # an iterator serves one call at a time

    def _check(self, namespace: str) -> None:
        if self._pinned.iterators is None:
            self._engine._check_open()
            raise StorageClosed("RocksDB snapshot is closed")
        if namespace not in self._names:
            check_namespace(namespace)
            raise InvalidRequest(
                f"namespace {namespace!r} did not exist when the snapshot was taken"
            )

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """The value of ``key`` as of the snapshot, or None."""
        k = check_key(key)
        self._check(namespace)
        engine = self._engine
        with self._lock:
            iterators = self._pinned.iterators
            if iterators is None:
                engine._check_open()
                raise StorageClosed("RocksDB snapshot is closed")
            engine._gate.enter()
            try:
                it = iterators[namespace]
                it.seek(k)
                if it.valid() and it.key() == k:
                    value: bytes = it.value()
                    return value
                it.status()
                return None
            except Exception as exc:
                engine._fail(exc, "read a snapshot")
            finally:
                engine._gate.leave()

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
        self._check(namespace)
        if lim == 0 or (s is not None and e is not None and s >= e):
            return iter(())
        return _scan_pinned(self._engine, self._pinned, namespace, s, e, reverse, lim, self._lock)

    def close(self) -> None:
        """Release the pinned iterators. Idempotent."""
        with self._lock:
            self._pinned.iterators = None

    def __enter__(self) -> RocksdbSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
