"""The LMDB storage engine: namespaces as named sub-databases of one environment.

Owns: :class:`LmdbEngine` and :class:`LmdbSnapshot`, the mapping of LMDB errors onto
Atoll's (map full / ENOSPC -> DiskFull, invalid or corrupt files -> CorruptData), map
growth, and the rules that keep py-lmdb safe under threads.
Never: keeps a cursor open between calls, or remaps the file while another thread is
inside LMDB.

Files live in ``<data_dir>/lmdb/`` (``data.mdb``, ``lock.mdb``, ``atoll.lock``).

Durability. py-lmdb cannot switch ``MDB_NOSYNC`` per transaction, so the mode is set
per environment from ``[storage] sync``:

* ``sync = true`` (the default): the environment runs with ``MDB_NOMETASYNC``. Every
  commit fsyncs its data pages, so the file is never corrupt after a crash; a
  ``write(sync=True)`` then flushes the meta page too (``mdb_env_sync``) before it
  returns, so it is durable. A ``write(sync=False)`` skips that second flush: it is
  atomic, and an OS crash or power loss may undo it until the next synced write (the
  Raft host uses it only for state that its log rebuilds). One fsync per unsynced
  commit instead of two.
* ``sync = false`` is UNSAFE: commits skip fsync and an OS crash or power loss can lose
  acknowledged writes, or corrupt the environment if it hits mid-commit. A
  ``write(sync=True)`` in this mode commits and then flushes with ``mdb_env_sync``.
  A process crash (SIGKILL) loses nothing in either mode: the page cache survives it.

Threads. Writers serialize on one lock (LMDB allows one write transaction). Readers
open short read transactions (``MDB_NOTLS`` is always on in py-lmdb, so a transaction
is not tied to its thread). Scans read in chunks, each with a fresh cursor inside one
long-lived read transaction, so no cursor (which holds pointers into the map) outlives a
call. A :class:`_CallGate` counts threads inside LMDB: ``close`` and map growth wait
for it to drain, which is what makes ``mdb_env_set_mapsize`` safe with snapshots open.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any, NoReturn

import lmdb
from atoll.core import (
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

__all__ = ["BACKEND", "LmdbEngine", "LmdbOptions", "LmdbSnapshot"]

BACKEND = "lmdb"
_MIB = 1024 * 1024
_SCAN_CHUNK = 256
"""Pairs read per cursor before the cursor is closed and the gate released."""

_CORRUPT = (
    lmdb.CorruptedError,
    lmdb.InvalidError,
    lmdb.PageNotFoundError,
    lmdb.VersionMismatchError,
    lmdb.BadChecksumError,
    lmdb.IncompatibleError,
)


class LmdbOptions:
    """``[storage] options`` understood by the LMDB backend (all optional).

    * ``max_map_size_mb`` (int, default ``map_size_mb``): grow the map on demand up to
      this many MiB; only at this ceiling does a write raise DiskFull.
    * ``max_namespaces`` (int, default 256): sub-databases the environment can hold.
    * ``max_readers`` (int, default 1024): concurrent read transactions (every open
      snapshot and unfinished scan holds one).
    * ``grow_wait_s`` (float, default 10.0): how long map growth waits for threads
      inside LMDB to leave before giving up with DiskFull.
    """

    __slots__ = ("grow_wait_s", "map_size", "max_map_size", "max_namespaces", "max_readers")

    def __init__(self, config: StorageConfig) -> None:
        opts = dict(config.options)
        known = {"max_map_size_mb", "max_namespaces", "max_readers", "grow_wait_s"}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ConfigError(
                f"storage.options: unknown LMDB option(s) {unknown} "
                f"(accepted: {', '.join(sorted(known))})"
            )
        self.map_size = int(config.map_size_mb) * _MIB
        max_mb = opts.get("max_map_size_mb", config.map_size_mb)
        self.max_map_size = _positive_int("max_map_size_mb", max_mb) * _MIB
        if self.max_map_size < self.map_size:
            raise ConfigError(
                f"storage.options.max_map_size_mb = {max_mb!r} is below "
                f"storage.map_size_mb = {config.map_size_mb}"
            )
        self.max_namespaces = _positive_int("max_namespaces", opts.get("max_namespaces", 256))
        self.max_readers = _positive_int("max_readers", opts.get("max_readers", 1024))
        wait = opts.get("grow_wait_s", 10.0)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise ConfigError(f"storage.options.grow_wait_s = {wait!r}: expected seconds >= 0")
        self.grow_wait_s = float(wait)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"storage.options.{name} = {value!r}: expected an integer > 0")
    return value


class _CallGate:
    """Counts threads inside LMDB and open read transactions.

    ``close`` waits for threads inside LMDB to leave. Growing the map also needs every
    long-lived read transaction (snapshot, unfinished scan) closed, because py-lmdb
    invalidates all transactions when ``set_mapsize`` remaps the file.
    """

    __slots__ = ("_busy", "_cond", "_exclusive", "_lock", "_pinned", "closed")

    def __init__(self) -> None:
        # Hot paths take the raw lock (a C-level context manager); only waiters use
        # the condition built on it.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._busy = 0
        self._pinned = 0
        self._exclusive = False
        self.closed = False

    def _admit(self) -> None:
        while self._exclusive and not self.closed:
            self._cond.wait()
        if self.closed:
            raise StorageClosed("LMDB storage engine is closed")

    def enter(self) -> None:
        with self._lock:
            if self._exclusive or self.closed:
                self._admit()
            self._busy += 1

    def leave(self) -> None:
        with self._lock:
            self._busy -= 1
            if self._busy == 0 and self._exclusive:
                self._cond.notify_all()

    def pin(self) -> None:
        """A long-lived read transaction is about to begin."""
        with self._lock:
            if self._exclusive or self.closed:
                self._admit()
            self._pinned += 1

    def unpin(self) -> None:
        with self._lock:
            self._pinned -= 1
            if self._pinned == 0 and self._exclusive:
                self._cond.notify_all()

    @property
    def pinned(self) -> int:
        return self._pinned

    def exclusive(self, timeout: float | None, *, unpinned: bool) -> bool:
        """Block new entries; wait until nobody is inside (and, if asked, nothing pinned).

        Returns False (and lets others in again) if that takes longer than ``timeout``.
        """
        with self._lock:
            self._exclusive = True
            if self._cond.wait_for(
                lambda: self._busy == 0 and (not unpinned or self._pinned == 0),
                timeout=timeout,
            ):
                return True
            self._exclusive = False
            self._cond.notify_all()
            return False

    def release_exclusive(self, *, close: bool = False) -> None:
        with self._lock:
            self._exclusive = False
            if close:
                self.closed = True
            self._cond.notify_all()

    def enter_pinned(self) -> None:
        """Enter for a call on an already pinned transaction.

        Not held back by a pending growth: growth waits for that pin to go away, and
        the pin's owner may need this call to finish first.
        """
        if not self.enter_always():
            raise StorageClosed("LMDB storage engine is closed")

    def enter_always(self) -> bool:
        """Enter even while growth or close waits (to release what they wait for).

        Returns False if the engine is already closed.
        """
        with self._lock:
            if self.closed:
                return False
            self._busy += 1
            return True


class LmdbEngine:
    """A :class:`atoll.core.StorageEngine` on LMDB (usually opened through the plugin).

    :param config: the ``[storage]`` section (``sync``, ``map_size_mb``, ``options``).
    :param data_dir: the node's data directory; files go to ``<data_dir>/lmdb/``.
    :raises CorruptData: the files exist but are not a valid LMDB environment.
    :raises StorageError: the directory is locked by another engine or unusable.
    """

    def __init__(self, config: StorageConfig, data_dir: str) -> None:
        self._config = config
        self._opts = LmdbOptions(config)
        self._path = os.path.join(os.path.abspath(data_dir), BACKEND)
        self._write_lock = threading.Lock()
        self._gate = _CallGate()
        self._writes = 0
        self._syncs = 0
        self._snapshots: weakref.WeakSet[LmdbSnapshot] = weakref.WeakSet()
        try:
            os.makedirs(self._path, exist_ok=True)
        except OSError as exc:
            self._fail_os(exc, "create the directory")
        self._lock_fd = self._lock_directory()
        try:
            self._env = self._open_env()
            self._dbs = self._open_namespaces()
            self._max_key = int(self._env.max_key_size())
            self._psize = int(self._env.stat()["psize"])
            self._growable = self._opts.max_map_size > self._opts.map_size
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ------------------------------------------------------------------ opening

    def _lock_directory(self) -> int:
        lock_path = os.path.join(self._path, "atoll.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._fail_os(exc, "open the lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StorageError(
                f"LMDB directory {self._path} is already open by another engine or process"
            ) from None
        return fd

    def _open_env(self) -> lmdb.Environment:
        sync = self._config.sync
        try:
            return lmdb.open(
                self._path,
                map_size=self._opts.map_size,
                subdir=True,
                max_dbs=self._opts.max_namespaces,
                max_readers=self._opts.max_readers,
                sync=sync,
                metasync=False,
                lock=True,
                readahead=False,
                meminit=False,
                max_spare_txns=4,
            )
        except lmdb.Error as exc:
            self._fail(exc, "open")

    def _open_namespaces(self) -> dict[str, Any]:
        dbs: dict[str, Any] = {}
        try:
            with self._env.begin() as txn:
                names = [bytes(k) for k in txn.cursor().iternext(values=False)]
            for raw in names:
                try:
                    name = check_namespace(raw.decode("ascii"))
                except (UnicodeDecodeError, InvalidRequest):
                    continue  # not one of ours; leave it alone
                dbs[name] = self._env.open_db(raw, create=False)
        except lmdb.Error as exc:
            self._fail(exc, "open the namespaces")
        return dbs

    # ------------------------------------------------------------------ errors

    def _fail(self, exc: BaseException, what: str) -> NoReturn:
        """Re-raise an LMDB error as the matching Atoll error (naming the path)."""
        if isinstance(exc, AtollError):
            raise exc
        where = f"LMDB at {self._path}: cannot {what}"
        if self._gate.closed:
            raise StorageClosed(f"{where}: the engine is closed") from exc
        if isinstance(exc, lmdb.MapFullError):
            raise DiskFull(
                f"{where}: the map is full at {self._env.info()['map_size'] // _MIB} MiB "
                f"(raise [storage] map_size_mb or options.max_map_size_mb)"
            ) from exc
        if isinstance(exc, lmdb.DiskError):
            raise DiskFull(f"{where}: the disk is full ({exc})") from exc
        if isinstance(exc, _CORRUPT):
            raise CorruptData(f"{where}: the files are corrupt or not LMDB ({exc})") from exc
        if isinstance(exc, lmdb.BadValsizeError):
            raise InvalidRequest(f"{where}: key or value size not supported ({exc})") from exc
        if isinstance(exc, lmdb.ReadersFullError):
            raise StorageError(
                f"{where}: too many open snapshots and scans "
                f"(options.max_readers = {self._opts.max_readers})"
            ) from exc
        if isinstance(exc, lmdb.DbsFullError):
            raise StorageError(
                f"{where}: too many namespaces "
                f"(options.max_namespaces = {self._opts.max_namespaces})"
            ) from exc
        if isinstance(exc, OSError):
            self._fail_os(exc, what)
        raise StorageError(f"{where}: {exc}") from exc

    def _fail_os(self, exc: OSError, what: str) -> NoReturn:
        where = f"LMDB at {self._path}: cannot {what}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"{where}: the disk is full ({exc})") from exc
        raise StorageError(f"{where}: {exc}") from exc

    def _db(self, namespace: str) -> Any:
        try:
            return self._dbs[namespace]
        except KeyError:
            check_namespace(namespace)
            raise InvalidRequest(
                f"namespace {namespace!r} does not exist (create_namespace it first)"
            ) from None

    def _check_open(self) -> None:
        if self._gate.closed:
            raise StorageClosed("LMDB storage engine is closed")

    # ------------------------------------------------------------------ properties

    @property
    def backend(self) -> str:
        """Always ``"lmdb"``."""
        return BACKEND

    @property
    def max_key_bytes(self) -> int:
        """LMDB's compile-time key limit (511 bytes in the usual build)."""
        return self._max_key

    @property
    def path(self) -> str:
        """The directory holding ``data.mdb``."""
        return self._path

    # ------------------------------------------------------------------ namespaces

    def create_namespace(self, name: str) -> None:
        """Create the sub-database ``name`` if missing. Idempotent and durable."""
        check_namespace(name)
        with self._write_lock:
            self._check_open()
            if name in self._dbs:
                return
            self._gate.enter()
            try:
                try:
                    db = self._env.open_db(name.encode("ascii"), create=True)
                    self._env.sync(True)
                except lmdb.Error as exc:
                    self._fail(exc, f"create namespace {name!r}")
            finally:
                self._gate.leave()
            self._dbs = {**self._dbs, name: db}

    def namespaces(self) -> list[str]:
        """Existing namespace names, sorted."""
        self._check_open()
        return sorted(self._dbs)

    # ------------------------------------------------------------------ reads

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """The current value of ``key`` in ``namespace``, or None."""
        k = check_key(key, self._max_key)
        db = self._db(namespace)
        self._gate.enter()
        try:
            with self._env.begin(db=db) as txn:
                return txn.get(k)
        except lmdb.Error as exc:
            self._fail(exc, "read")
        finally:
            self._gate.leave()

    def _read_chunk(
        self,
        txn: Any,
        db: Any,
        after: bytes | None,
        start: bytes | None,
        end: bytes | None,
        reverse: bool,
        count: int,
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``count`` pairs of ``[start, end)`` strictly beyond ``after``."""
        out: list[tuple[bytes, bytes]] = []
        self._gate.enter_pinned()
        try:
            with txn.cursor(db) as cur:
                if not reverse:
                    seek = after if after is not None else start
                    ok = cur.set_range(seek) if seek else cur.first()
                    if ok and after is not None and cur.key() == after:
                        ok = cur.next()
                    while ok and len(out) < count:
                        k = cur.key()
                        if end is not None and k >= end:
                            break
                        out.append((k, cur.value()))
                        ok = cur.next()
                else:
                    bound = after if after is not None else end
                    if bound is None:
                        ok = cur.last()
                    elif cur.set_range(bound):
                        ok = cur.prev()  # the key found is >= bound: step below it
                    else:
                        ok = cur.last()  # every key is below bound
                    while ok and len(out) < count:
                        k = cur.key()
                        if start is not None and k < start:
                            break
                        out.append((k, cur.value()))
                        ok = cur.prev()
        except lmdb.Error as exc:
            self._fail(exc, "scan")
        finally:
            self._gate.leave()
        return out

    def _scan_txn(
        self,
        txn: Any,
        db: Any,
        start: bytes | None,
        end: bytes | None,
        reverse: bool,
        limit: int | None,
        check: Any,
    ) -> Iterator[tuple[bytes, bytes]]:
        remaining = limit
        after: bytes | None = None
        while remaining is None or remaining > 0:
            check()
            want = _SCAN_CHUNK if remaining is None else min(_SCAN_CHUNK, remaining)
            chunk = self._read_chunk(txn, db, after, start, end, reverse, want)
            yield from chunk
            if len(chunk) < want:
                return
            after = chunk[-1][0]
            if remaining is not None:
                remaining -= len(chunk)

    def scan(
        self,
        namespace: str,
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` in ``[start, end)`` from one read transaction."""
        s, e, lim = check_scan_args(start, end, limit)
        self._check_open()
        db = self._db(namespace)
        return self._scan(db, s, e, reverse, lim)

    def _scan(
        self,
        db: Any,
        start: bytes | None,
        end: bytes | None,
        reverse: bool,
        limit: int | None,
    ) -> Iterator[tuple[bytes, bytes]]:
        if limit == 0 or (start is not None and end is not None and start >= end):
            return
        txn = self._begin_read()
        try:
            yield from self._scan_txn(txn, db, start, end, reverse, limit, self._check_open)
        finally:
            self._abort(txn)
            self._gate.unpin()

    def _begin_read(self) -> Any:
        """Begin a long-lived read transaction, pinned; the caller unpins after abort."""
        self._gate.pin()
        try:
            self._gate.enter_pinned()  # pinned already: a pending growth waits for us
        except BaseException:
            self._gate.unpin()
            raise
        try:
            return self._env.begin(buffers=False)
        except BaseException as exc:
            self._gate.unpin()
            if isinstance(exc, lmdb.Error):
                self._fail(exc, "begin a read transaction")
            raise
        finally:
            self._gate.leave()

    def _abort(self, txn: Any) -> None:
        # Not blocked by a pending map growth or close: they wait for this very abort.
        if not self._gate.enter_always():
            return  # env.close() already aborted every transaction
        try:
            txn.abort()
        except lmdb.Error:
            pass
        finally:
            self._gate.leave()

    def snapshot(self) -> LmdbSnapshot:
        """A point-in-time view: one LMDB read transaction. Close it when done."""
        self._check_open()
        dbs = self._dbs  # replaced, never mutated: this is the namespace set right now
        snap = LmdbSnapshot(self, self._begin_read(), dbs)
        self._snapshots.add(snap)
        return snap

    # ------------------------------------------------------------------ writes

    def write(self, batch: Any, *, sync: bool | None = None) -> None:
        """Apply ``batch`` in one write transaction; see the module docstring on sync."""
        with self._write_lock:
            self._check_open()
            dbs = self._dbs
            ops = check_batch(batch, dbs, self._max_key)
            if not ops:
                return
            do_sync = self._config.sync if sync is None else bool(sync)
            while True:
                try:
                    self._commit(ops, dbs)
                    break
                except lmdb.MapFullError as exc:
                    self._grow(exc)
            if self._growable:
                self._maybe_grow_early()
            if do_sync:
                self._flush()  # the meta page (and, with sync = false, the data pages)
                self._syncs += 1
            self._writes += 1

    def _commit(self, ops: list[tuple[int, str, bytes, bytes]], dbs: dict[str, Any]) -> None:
        self._gate.enter()
        try:
            txn = self._env.begin(write=True)
            try:
                # Runs of puts to one namespace go to LMDB in one putmulti call: the loop
                # then runs in C, and the writer thread holds the GIL far less (the
                # event loop waits for the GIL while it does).
                run: list[tuple[bytes, bytes]] = []
                run_ns = ""
                for op, ns, a, b in ops:
                    if op == OP_PUT:
                        if ns != run_ns and run:
                            _put_run(txn, dbs[run_ns], run)
                            run = []
                        run_ns = ns
                        run.append((a, b))
                        continue
                    if run:
                        _put_run(txn, dbs[run_ns], run)
                        run = []
                    db = dbs[ns]
                    if op == OP_DELETE:
                        txn.delete(a, db=db)
                    elif op == OP_DELETE_RANGE:
                        with txn.cursor(db) as cur:
                            ok = cur.set_range(a) if a else cur.first()
                            while ok and cur.key() < b:
                                # delete() moves to the next item; an emptied cursor
                                # reports an empty key, which ends the loop.
                                ok = cur.delete() and bool(cur.key())
                if run:
                    _put_run(txn, dbs[run_ns], run)
                txn.commit()
            except BaseException:
                txn.abort()
                raise
        except lmdb.MapFullError:
            raise
        except lmdb.Error as exc:
            self._fail(exc, "write")
        except OSError as exc:
            self._fail_os(exc, "write")
        finally:
            self._gate.leave()

    def _grow(self, exc: lmdb.MapFullError | None, *, wait: float | None = None) -> bool:
        """Double the map (up to the ceiling). ``exc``: a write failed and must get room.

        Without ``exc`` this is opportunistic: it gives up at once if a snapshot or
        scan is open. With it, it waits ``grow_wait_s`` for them, then raises DiskFull.
        """
        current = int(self._env.info()["map_size"])
        ceiling = self._opts.max_map_size
        if current >= ceiling:
            if exc is None:
                return False
            self._fail(exc, "write")
        if exc is None and wait is None and self._gate.pinned:
            return False
        if exc is not None:
            wait = self._opts.grow_wait_s
        if not self._gate.exclusive(wait or 0.0, unpinned=True):
            if exc is None:
                return False
            raise DiskFull(
                f"LMDB at {self._path}: the map is full at {current // _MIB} MiB and cannot "
                f"grow while {self._gate.pinned} snapshot(s)/scan(s) stay open "
                f"(waited {self._opts.grow_wait_s}s; options.grow_wait_s)"
            ) from exc
        new_size = min(max(current * 2, current + 64 * _MIB), ceiling)
        try:
            self._env.set_mapsize(new_size)
        except lmdb.Error as err:
            self._fail(err, f"grow the map to {new_size // _MIB} MiB")
        finally:
            self._gate.release_exclusive()
        return True

    def _maybe_grow_early(self) -> None:
        """Grow before the map is full (cheap check after each write).

        Over 75% used it grows if no snapshot or scan is open; over 90% it waits for them
        (blocking new ones, up to ``grow_wait_s``). Running into ``MapFullError`` instead
        means aborting a failed write transaction while readers run, which py-lmdb has
        been seen to deadlock on under load; growing early keeps that path for batches
        larger than a tenth of the map.
        """
        info = self._env.info()
        used = (int(info["last_pgno"]) + 1) * self._psize
        size = int(info["map_size"])
        if used * 4 > size * 3 and not self._grow(None) and used * 10 > size * 9:
            self._grow(None, wait=self._opts.grow_wait_s)

    def _flush(self) -> None:
        self._gate.enter()
        try:
            self._env.sync(True)
        except lmdb.Error as exc:
            self._fail(exc, "sync")
        except OSError as exc:
            self._fail_os(exc, "sync")
        finally:
            self._gate.leave()

    def sync(self) -> None:
        """Flush every committed transaction to disk."""
        with self._write_lock:
            self._check_open()
            self._flush()
            self._syncs += 1

    # ------------------------------------------------------------------ admin

    def stats(self) -> StorageStats:
        """Exact key counts, bytes allocated on disk, the current map size."""
        self._check_open()
        self._gate.enter()
        try:
            keys: dict[str, int] = {}
            with self._env.begin() as txn:
                for name, db in self._dbs.items():
                    keys[name] = int(txn.stat(db)["entries"])
            capacity = int(self._env.info()["map_size"])
        except lmdb.Error as exc:
            self._fail(exc, "read statistics")
        finally:
            self._gate.leave()
        disk = 0
        for name in ("data.mdb", "lock.mdb"):
            try:
                st = os.stat(os.path.join(self._path, name))
            except FileNotFoundError:
                continue
            disk += st.st_blocks * 512
        return StorageStats(
            backend=BACKEND,
            path=self._path,
            disk_bytes=disk,
            keys=keys,
            capacity_bytes=capacity,
            writes=self._writes,
            syncs=self._syncs,
        )

    def close(self) -> None:
        """Flush, invalidate open snapshots, close the environment. Idempotent."""
        with self._write_lock:
            if self._gate.closed:
                return
            self._gate.exclusive(None, unpinned=False)
            try:
                for snap in list(self._snapshots):
                    snap._invalidate()
                self._env.sync(True)
            finally:
                self._env.close()
                self._gate.release_exclusive(close=True)
                os.close(self._lock_fd)

    def __enter__(self) -> LmdbEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._gate.closed else "open"
        return f"<LmdbEngine {self._path} {state}>"


def _put_run(txn: Any, db: Any, items: list[tuple[bytes, bytes]]) -> None:
    if len(items) == 1:
        txn.put(items[0][0], items[0][1], db=db)
        return
    with txn.cursor(db) as cur:
        cur.putmulti(items)


class LmdbSnapshot:
    """A point-in-time view of an :class:`LmdbEngine` (one read transaction)."""

    def __init__(self, engine: LmdbEngine, txn: Any, dbs: dict[str, Any]) -> None:
        self._engine = engine
        self._txn: Any = txn
        self._pinned = True
        self._dbs = dbs
        self._lock = threading.Lock()  # one LMDB call at a time per transaction

    def _check(self) -> Any:
        txn = self._txn
        if txn is None:
            raise StorageClosed("LMDB snapshot is closed")
        self._engine._check_open()
        return txn

    def _db(self, namespace: str) -> Any:
        try:
            return self._dbs[namespace]
        except KeyError:
            check_namespace(namespace)
            raise InvalidRequest(
                f"namespace {namespace!r} did not exist when the snapshot was taken"
            ) from None

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """The value of ``key`` as of the snapshot, or None."""
        engine = self._engine
        k = check_key(key, engine._max_key)
        db = self._db(namespace)
        with self._lock:
            txn = self._check()
            engine._gate.enter_pinned()
            try:
                value: bytes | None = txn.get(k, db=db)
                return value
            except lmdb.Error as exc:
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
        db = self._db(namespace)
        self._check()
        if lim == 0 or (s is not None and e is not None and s >= e):
            return iter(())
        return self._scan(db, s, e, reverse, lim)

    def _scan(
        self,
        db: Any,
        start: bytes | None,
        end: bytes | None,
        reverse: bool,
        limit: int | None,
    ) -> Iterator[tuple[bytes, bytes]]:
        remaining = limit
        after: bytes | None = None
        while remaining is None or remaining > 0:
            want = _SCAN_CHUNK if remaining is None else min(_SCAN_CHUNK, remaining)
            with self._lock:
                txn = self._check()
                chunk = self._engine._read_chunk(txn, db, after, start, end, reverse, want)
            yield from chunk
            if len(chunk) < want:
                return
            after = chunk[-1][0]
            if remaining is not None:
                remaining -= len(chunk)

    def _invalidate(self) -> None:
        """Called by the engine's close: env.close() aborts the transaction itself.

        No lock here: a reader holding ``_lock`` may be waiting for the gate that
        ``close`` holds; it finds the engine closed when the gate lets it in.
        """
        self._txn = None

    def close(self) -> None:
        """Abort the read transaction. Idempotent."""
        with self._lock:
            txn, self._txn = self._txn, None
            if self._pinned:
                self._pinned = False
                self._engine._abort(txn)
                self._engine._gate.unpin()

    def __enter__(self) -> LmdbSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A leaked snapshot would hold its pin forever and block map growth.
        if getattr(self, "_pinned", False):
            self.close()
