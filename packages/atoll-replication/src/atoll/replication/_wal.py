"""The Raft WAL: every group's log entries and hard state in one append-only file set.

Owns: :class:`RaftWal` (segment files, the record format, replay and torn-tail repair,
the in-memory index of where each live entry lies, segment rotation, purging and the
rewriting of cold groups) and :class:`WalEngine`, the :class:`atoll.core.StorageEngine`
the Raft host writes through: it keeps ``raft_log`` and the hard states in the WAL and
passes everything else to the node's engine.
Never: decides what to write (the host's batches do) or interprets entries.

Why. On a B-tree engine (LMDB) every synced commit copies each page it touches, and every
group's log tail is a page of its own: with 64 busy groups a cycle rewrote a few hundred
KiB to persist a few KiB of entries (docs/performance.md). Appending to a file and
``fdatasync``-ing it writes only the bytes, as etcd's WAL and TiKV's raft-engine do.

Layout (``<data_dir>/raftwal/``)::

    0000000000000001.wal   header: b"ATOLWAL\\x01" | u64 segment id
                           records: u32 payload length | u32 crc32(payload) | payload
    payload: u64 lsn | ops...
      1 entries  u64 group | u64 first index | u32 count | count x u32 length | values
      2 delete   u64 group | u64 lo | u64 hi      (entries lo <= index < hi)
      3 hard st. u64 group | u32 length | value

A record is one write: it is all there after a crash or (a torn tail of the last
segment) not at all. A record that fails its checksum anywhere else is
:class:`atoll.core.CorruptData`, naming the file and offset.

Ordering with the engine. A batch that installs a snapshot (it wipes a group's log and
writes the restored state) writes the engine part first, synced, with a *barrier* key
(``raft_state`` ``u64 group | b"L"`` = the record's lsn) and a copy of the hard state;
replay ignores a group's records older than its barrier. So a crash between the two
writes leaves the snapshot and an empty log, never the snapshot followed by the wiped
entries. A batch that drops a log prefix (after a compaction) syncs the engine first:
the compaction it follows must be durable before the entries it replaces disappear.
Any other batch writes the WAL first: the engine part is applied state the log rebuilds.

Segments. A new segment starts when the active one passes ``segment_bytes``, with a
record holding every group's hard state, so older segments only matter for entries.
Segments are deleted oldest first once no live entry lies in them. Groups whose few
live entries hold up the oldest segment (idle or removed groups) are rewritten into the
active segment when more than ``max_segments`` exist.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import zlib
from array import array
from collections.abc import Iterator
from typing import Any

from atoll.core import (
    CorruptData,
    DiskFull,
    InvalidRequest,
    StorageEngine,
    StorageError,
    StorageSnapshot,
    StorageStats,
    WriteBatch,
)
from atoll.core.storagekit import OP_DELETE_RANGE, OP_PUT

from ._engine_log import NS_LOG, NS_STATE

__all__ = ["WAL_DIR", "RaftWal", "WalEngine"]

log = logging.getLogger("atoll.replication.wal")

WAL_DIR = "raftwal"
_MAGIC = b"ATOLWAL\x01"
_HEADER = struct.Struct(">8sQ")
_REC = struct.Struct(">II")
_LSN = struct.Struct(">Q")
_ENTRIES = struct.Struct(">BQQI")
_DELETE = struct.Struct(">BQQQ")
_HS = struct.Struct(">BQI")
_GI = struct.Struct(">QQ")
_G = struct.Struct(">Q")
_T_ENTRIES, _T_DELETE, _T_HS = 1, 2, 3
_END = (1 << 64) - 1
"""``hi`` of a delete that runs to the end of the group's log."""
_OFF_BITS = 40
_OFF_MASK = (1 << _OFF_BITS) - 1
_MAX_RECORD = 1 << 31
_HS_SUFFIX = 0x68  # b"h": EngineLogStorage's hard-state key suffix
_BARRIER = b"L"


def _log_range(start: bytes, end: bytes) -> tuple[int, int, int] | None:
    """``(group, lo, hi)`` of a ``raft_log`` key range inside one group (``hi`` is
    ``_END`` for a range running to the next group's first key); None when the range
    spans groups."""
    g, lo = _GI.unpack(start)
    g2, hi = _GI.unpack(end)
    if g2 == g:
        return g, lo, hi
    if g2 == g + 1 and hi == 0:
        return g, lo, _END
    return None


def _segment_name(seg: int) -> str:
    return f"{seg:016x}.wal"


class _Run:
    """One group's live entries: indexes ``lo .. lo + len(pos) - 1``, where each lies."""

    __slots__ = ("lens", "lo", "pos")

    def __init__(self) -> None:
        self.lo = 0
        self.pos = array("Q")
        """``segment << 40 | offset`` of each entry's value."""
        self.lens = array("I")

    @property
    def hi(self) -> int:
        return self.lo + len(self.pos) - 1

    def clear(self) -> None:
        self.pos = array("Q")
        self.lens = array("I")
        self.lo = 0

    def delete(self, lo: int, hi: int) -> None:
        """Drop the entries with ``lo <= index < hi`` (a prefix, a suffix or all)."""
        n = len(self.pos)
        if not n:
            return
        top = self.lo + n  # one past the last
        if lo >= top or hi <= self.lo:
            return
        if lo <= self.lo and hi >= top:
            self.clear()
        elif lo <= self.lo:
            cut = hi - self.lo
            del self.pos[:cut]
            del self.lens[:cut]
            self.lo = hi
        elif hi >= top:
            cut = lo - self.lo
            del self.pos[cut:]
            del self.lens[cut:]
        else:
            raise StorageError(
                f"raft WAL: deleting entries [{lo}, {hi}) would leave a gap in "
                f"[{self.lo}, {top - 1}]"
            )

    def append(self, index: int, positions: list[int], lengths: list[int]) -> None:
        """Entries from ``index`` on, overwriting any at or after it (the caller checked
        that ``index`` is at most one past the last)."""
        if not self.pos or index < self.lo:
            self.clear()
            self.lo = index
        elif index <= self.hi:
            self.delete(index, _END)
        self.pos.extend(positions)
        self.lens.extend(lengths)


class RaftWal:
    """The append-only log files and the index of the live entries and hard states.

    Thread-safe: one writer at a time (the host's writer thread), readers from any
    thread. Entry values are read back from the files with ``pread`` (the Raft storage
    above keeps the recent tail in memory, so that is rare). Two locks: writers hold
    ``_wlock`` through their append and fdatasync; the index (runs, hard states,
    segment list, read descriptors) has ``_ilock``, which a writer takes only to apply a
    durable record, so a reader on the event loop never waits for a writer's fsync.
    """

    def __init__(
        self,
        directory: str,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        max_segments: int = 16,
        barriers: dict[int, int] | None = None,
    ) -> None:
        if segment_bytes < 4096:
            raise InvalidRequest(f"raft WAL segment size {segment_bytes} is below 4096 bytes")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_segments = max(2, max_segments)
        self._wlock = threading.Lock()
        """Serialises writers (held through the append, the fdatasync, rotation)."""
        self._ilock = threading.Lock()
        """Guards the index: ``_runs``, ``_hs``, ``_segments`` and ``_rfds``. Only a
        writer changes them (holding both locks), so a writer reads them freely."""
        self._runs: dict[int, _Run] = {}
        self._hs: dict[int, bytes] = {}
        self._segments: list[int] = []
        self._rfds: dict[int, int] = {}
        self._wfd = -1
        self._active = 0
        self._size = 0
        self._lsn = 0
        self.stats: dict[str, int] = {
            "records": 0,
            "bytes": 0,
            "syncs": 0,
            "rotations": 0,
            "purged": 0,
            "rewritten_entries": 0,
            "torn_bytes_dropped": 0,
        }
        os.makedirs(directory, exist_ok=True)
        self._open(barriers or {})

    # ------------------------------------------------------------------ opening

    def _open(self, barriers: dict[int, int]) -> None:
        segs = []
        for name in os.listdir(self.directory):
            if name.endswith(".wal"):
                try:
                    segs.append(int(name[:-4], 16))
                except ValueError:
                    raise CorruptData(
                        f"raft WAL {self.directory}: unexpected file {name!r}"
                    ) from None
        segs.sort()
        self._lsn = max(barriers.values(), default=0)
        for i, seg in enumerate(segs):
            self._replay(seg, last=i == len(segs) - 1, barriers=barriers)
        self._segments = segs
        if segs:
            self._active = segs[-1]
            path = self._path(self._active)
            self._wfd = self._os(lambda: os.open(path, os.O_WRONLY | os.O_APPEND), "open", path)
            self._size = os.fstat(self._wfd).st_size
        else:
            self._new_segment(1, checkpoint=False)

    def _path(self, seg: int) -> str:
        return os.path.join(self.directory, _segment_name(seg))

    def _replay(self, seg: int, *, last: bool, barriers: dict[int, int]) -> None:
        path = self._path(seg)
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < _HEADER.size or data[:8] != _MAGIC:
            if last and len(data) < _HEADER.size and not data.strip(b"\0"):
                # Created but its header never made it to disk: an empty segment.
                self._truncate(path, 0)
                self._write_header(path, seg)
                return
            raise CorruptData(f"raft WAL segment {path} has no valid header")
        if _HEADER.unpack_from(data)[1] != seg:
            raise CorruptData(f"raft WAL segment {path} names another segment in its header")
        off = _HEADER.size
        end = len(data)
        while off < end:
            bad = None
            torn = False
            if end - off < _REC.size:
                bad, torn = "a record header is cut short", True
            else:
                length, crc = _REC.unpack_from(data, off)
                body = off + _REC.size
                if body + length > end:
                    bad, torn = "a record runs past the end of the file", True
                elif length < _LSN.size:
                    bad = "a record has an impossible length"
                elif zlib.crc32(data[body : body + length]) != crc:
                    bad = "a record fails its checksum"
                    torn = body + length == end  # the last record, cut short in place
            if bad is not None:
                if not torn and not data[off:].strip(b"\0"):
                    bad, torn = "only zeros follow the last record", True
                if last and torn:
                    log.warning(
                        "raft WAL %s: %s at offset %d; dropping the %d-byte torn tail "
                        "(a write a crash interrupted, never acknowledged)",
                        path,
                        bad,
                        off,
                        end - off,
                    )
                    self.stats["torn_bytes_dropped"] += end - off
                    self._truncate(path, off)
                    return
                raise CorruptData(f"raft WAL segment {path}: {bad} at offset {off}")
            self._apply_record(data, body, length, seg, barriers)
            off = body + length

    def _truncate(self, path: str, off: int) -> None:
        def run() -> None:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, off)
                os.fsync(fd)
            finally:
                os.close(fd)

        self._os(run, "truncate the torn tail of", path)

    def _apply_record(
        self, data: bytes, body: int, length: int, seg: int, barriers: dict[int, int]
    ) -> None:
        lsn = _LSN.unpack_from(data, body)[0]
        self._lsn = max(self._lsn, lsn)
        off = body + _LSN.size
        end = body + length
        base = seg << _OFF_BITS
        while off < end:
            t = data[off]
            if t == _T_ENTRIES:
                _, g, index, count = _ENTRIES.unpack_from(data, off)
                off += _ENTRIES.size
                lens = list(struct.unpack_from(f">{count}I", data, off))
                off += 4 * count
                positions = []
                p = off
                for n in lens:
                    positions.append(base | p)
                    p += n
                off = p
                if lsn >= barriers.get(g, 0):
                    run = self._runs.get(g)
                    if run is None:
                        run = self._runs[g] = _Run()
                    if run.pos and index > run.hi + 1:  # never written: _check refuses it
                        raise CorruptData(
                            f"raft WAL segment {self._path(seg)}: group {g} entry {index} "
                            f"leaves a gap after {run.hi}"
                        )
                    run.append(index, positions, lens)
            elif t == _T_DELETE:
                _, g, lo, hi = _DELETE.unpack_from(data, off)
                off += _DELETE.size
                if lsn >= barriers.get(g, 0) and g in self._runs:
                    self._runs[g].delete(lo, hi)
            elif t == _T_HS:
                _, g, n = _HS.unpack_from(data, off)
                off += _HS.size
                if lsn >= barriers.get(g, 0):
                    self._hs[g] = data[off : off + n]
                off += n
            else:
                raise CorruptData(
                    f"raft WAL segment {self._path(seg)}: unknown operation {t} in the "
                    f"record at lsn {lsn}"
                )
        if off != end:
            raise CorruptData(
                f"raft WAL segment {self._path(seg)}: the record at lsn {lsn} is malformed"
            )

    # ------------------------------------------------------------------ errors

    def _os(self, fn: Any, what: str, path: str) -> Any:
        try:
            return fn()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"raft WAL: cannot {what} {path}: disk full ({exc})") from exc
            raise StorageError(f"raft WAL: cannot {what} {path}: {exc}") from exc

    # ------------------------------------------------------------------ segments

    def _write_header(self, path: str, seg: int) -> None:
        def run() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, _HEADER.pack(_MAGIC, seg))
                os.fsync(fd)
            finally:
                os.close(fd)

        self._os(run, "write the header of", path)

    def _new_segment(self, seg: int, *, checkpoint: bool) -> None:
        path = self._path(seg)

        def run() -> int:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            try:
                os.write(fd, _HEADER.pack(_MAGIC, seg))
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(path)
                raise
            return fd

        fd = self._os(run, "create", path)
        self._fsync_dir()
        if self._wfd >= 0:
            os.close(self._wfd)
        self._wfd = fd
        self._active = seg
        self._size = _HEADER.size
        with self._ilock:
            self._segments.append(seg)
        if checkpoint and self._hs:
            # The new segment holds every hard state: older ones only matter for entries.
            ops = [(OP_PUT, NS_STATE, _G.pack(g) + b"h", v) for g, v in sorted(self._hs.items())]
            self._append(self._encode(ops), sync=True)

    def _fsync_dir(self) -> None:
        def run() -> None:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        self._os(run, "sync the directory", self.directory)

    def _maintain(self) -> None:
        """Rotate a full segment, delete the ones nothing lives in, rewrite cold groups."""
        if self._size < self.segment_bytes:
            return
        self.stats["rotations"] += 1
        # The full segment is durable before the next exists: replay treats only the
        # last segment's tail as possibly torn.
        self._os(lambda: os.fdatasync(self._wfd), "sync", self._path(self._active))
        self._new_segment(self._active + 1, checkpoint=True)
        self._purge()
        if len(self._segments) > self.max_segments:
            self._rewrite_cold()
            self._purge()

    def _oldest_needed(self) -> int:
        oldest = self._active
        for run in self._runs.values():
            if run.pos:
                oldest = min(oldest, run.pos[0] >> _OFF_BITS)
        return oldest

    def _purge(self) -> None:
        keep = self._oldest_needed()
        doomed = [s for s in self._segments if s < keep]
        if not doomed:
            return
        for seg in doomed:  # oldest first: a later segment's deletes never outlive the
            path = self._path(seg)  # entries they delete
            with self._ilock:
                fd = self._rfds.pop(seg, None)
                if fd is not None:
                    os.close(fd)
                self._os(lambda p=path: os.unlink(p), "delete", path)
                self._segments.remove(seg)
            self.stats["purged"] += 1
        self._fsync_dir()

    def _rewrite_cold(self) -> None:
        """Copy the live entries of the small groups that keep the oldest segment alive
        into the active segment (a group with more than an eighth of a segment live will
        compact soon by itself)."""
        oldest = self._segments[0]
        budget = self.segment_bytes // 8
        for g, run in sorted(self._runs.items()):
            if not run.pos or run.pos[0] >> _OFF_BITS != oldest:
                continue
            if sum(run.lens) > budget:
                continue
            ops: list[tuple[int, str, bytes, bytes]] = [
                (OP_DELETE_RANGE, NS_LOG, _GI.pack(g, run.lo), _GI.pack(g + 1, 0))
            ]
            with self._ilock:
                for i in range(len(run.pos)):
                    value = self._read(run.pos[i], run.lens[i])
                    ops.append((OP_PUT, NS_LOG, _GI.pack(g, run.lo + i), value))
            self.stats["rewritten_entries"] += len(run.pos)
            self._append(self._encode(ops), sync=True)

    # ------------------------------------------------------------------ writing

    def next_lsn(self) -> int:
        """Reserve the lsn the next record will carry (a barrier written before it)."""
        with self._wlock:
            self._lsn += 1
            return self._lsn

    def _encode(
        self, ops: list[tuple[int, str, bytes, bytes]], lsn: int | None = None
    ) -> tuple[bytes, list[tuple[Any, ...]]]:
        """One record for ``ops`` (NS_LOG puts and range deletes, hard-state puts), and the
        index changes it makes (positions relative to the record's start)."""
        if lsn is None:
            self._lsn += 1
            lsn = self._lsn
        parts: list[bytes] = [_LSN.pack(lsn)]
        size = _REC.size + _LSN.size
        changes: list[tuple[Any, ...]] = []
        i = 0
        n = len(ops)
        while i < n:
            kind, ns, k, v = ops[i]
            if ns == NS_LOG and kind == OP_PUT and len(k) == 16:
                g, index = _GI.unpack(k)
                vals = [v]
                j = i + 1
                while j < n:
                    kind2, ns2, k2, v2 = ops[j]
                    if kind2 != OP_PUT or ns2 != NS_LOG or k2 != _GI.pack(g, index + len(vals)):
                        break
                    vals.append(v2)
                    j += 1
                lens = [len(x) for x in vals]
                head = _ENTRIES.pack(_T_ENTRIES, g, index, len(vals)) + struct.pack(
                    f">{len(vals)}I", *lens
                )
                parts.append(head)
                size += len(head)
                changes.append((_T_ENTRIES, g, index, size, lens))
                parts.extend(vals)
                size += sum(lens)
                i = j
                continue
            if ns == NS_LOG and kind == OP_DELETE_RANGE and len(k) == 16 and len(v) == 16:
                rng = _log_range(k, v)
                if rng is None:
                    raise StorageError(f"raft WAL: a delete spans groups ({k!r} to {v!r})")
                g, lo, hi = rng
                parts.append(_DELETE.pack(_T_DELETE, g, lo, hi))
                size += _DELETE.size
                changes.append((_T_DELETE, g, lo, hi))
            elif ns == NS_STATE and kind == OP_PUT and len(k) == 9 and k[8] == _HS_SUFFIX:
                g = _G.unpack_from(k)[0]
                head = _HS.pack(_T_HS, g, len(v))
                parts.append(head)
                parts.append(v)
                size += len(head) + len(v)
                changes.append((_T_HS, g, v))
            else:
                raise StorageError(f"raft WAL: cannot store operation {kind} on {ns} {k!r}")
            i += 1
        payload = b"".join(parts)
        if len(payload) >= _MAX_RECORD:
            raise InvalidRequest(f"raft WAL: a {len(payload)}-byte record is too large")
        return _REC.pack(len(payload), zlib.crc32(payload)) + payload, changes

    def _check(self, changes: list[tuple[Any, ...]]) -> None:
        """Refuse a record that would leave a gap in a group's log (before it is written:
        replay would call it corrupt), simulating its changes on each group's bounds."""
        state: dict[int, tuple[int, int] | None] = {}
        for ch in changes:
            t, g = ch[0], ch[1]
            if t == _T_HS:
                continue
            if g not in state:
                run = self._runs.get(g)
                state[g] = (run.lo, run.hi + 1) if run is not None and run.pos else None
            cur = state[g]
            if t == _T_ENTRIES:
                index = ch[2]
                if cur is not None and index > cur[1]:
                    raise StorageError(
                        f"raft WAL: group {g} entry {index} would leave a gap after {cur[1] - 1}"
                    )
                lo = index if cur is None or index < cur[0] else cur[0]
                state[g] = (lo, index + len(ch[4]))
                continue
            lo_d, hi_d = ch[2], ch[3]
            if cur is None or lo_d >= cur[1] or hi_d <= cur[0]:
                continue
            if lo_d <= cur[0] and hi_d >= cur[1]:
                state[g] = None
            elif lo_d <= cur[0]:
                state[g] = (hi_d, cur[1])
            elif hi_d >= cur[1]:
                state[g] = (cur[0], lo_d)
            else:
                raise StorageError(
                    f"raft WAL: deleting group {g} entries [{lo_d}, {hi_d}) would leave a gap"
                )

    def _append(self, encoded: tuple[bytes, list[tuple[Any, ...]]], *, sync: bool) -> None:
        rec, changes = encoded
        start = self._size
        path = self._path(self._active)
        try:
            view = memoryview(rec)
            while view:
                written = os.write(self._wfd, view)
                view = view[written:]
            if sync:
                os.fdatasync(self._wfd)
        except OSError as exc:
            # Leave no partial record behind: the host retries the same batch.
            try:
                os.ftruncate(self._wfd, start)
            except OSError:
                log.exception("raft WAL %s: cannot cut a failed write back", path)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"raft WAL: cannot append to {path}: disk full ({exc})") from exc
            raise StorageError(f"raft WAL: cannot append to {path}: {exc}") from exc
        self._size = start + len(rec)
        self.stats["records"] += 1
        self.stats["bytes"] += len(rec)
        if sync:
            self.stats["syncs"] += 1
        with self._ilock:
            self._index(changes, (self._active << _OFF_BITS) | start)

    def _index(self, changes: list[tuple[Any, ...]], base: int) -> None:
        """Apply a written record's changes to the index (``_ilock`` held)."""
        for ch in changes:
            t, g = ch[0], ch[1]
            if t == _T_ENTRIES:
                _, _, index, off, lens = ch
                positions = []
                p = base + off
                for n in lens:
                    positions.append(p)
                    p += n
                run = self._runs.get(g)
                if run is None:
                    run = self._runs[g] = _Run()
                run.append(index, positions, lens)
            elif t == _T_DELETE:
                run = self._runs.get(g)
                if run is not None:
                    run.delete(ch[2], ch[3])
            else:
                self._hs[g] = ch[2]

    def write(
        self, ops: list[tuple[int, str, bytes, bytes]], *, sync: bool, lsn: int | None = None
    ) -> None:
        """Append one record holding ``ops`` (``sync``: fdatasync before returning)."""
        with self._wlock:
            encoded = self._encode(ops, lsn)
            self._check(encoded[1])
            self._append(encoded, sync=sync)
            self._maintain()

    def sync(self) -> None:
        """Make every appended record durable."""
        with self._wlock:
            path = self._path(self._active)
            self._os(lambda: os.fdatasync(self._wfd), "sync", path)
            self.stats["syncs"] += 1

    # ------------------------------------------------------------------ reading

    def _read(self, pos: int, length: int) -> bytes:
        """One entry's value (``_ilock`` held: a purge may close the descriptor)."""
        seg = pos >> _OFF_BITS
        fd = self._rfds.get(seg)
        path = self._path(seg)
        if fd is None:
            fd = self._os(lambda: os.open(path, os.O_RDONLY), "open", path)
            self._rfds[seg] = fd
        data: bytes = self._os(lambda: os.pread(fd, length, pos & _OFF_MASK), "read", path)
        if len(data) != length:
            raise CorruptData(
                f"raft WAL segment {path}: an entry at {pos & _OFF_MASK} is cut short"
            )
        return data

    def bounds(self, group: int) -> tuple[int, int] | None:
        """``(first, last)`` live entry index of ``group``, or None when it has none."""
        with self._ilock:
            run = self._runs.get(group)
            if run is None or not run.pos:
                return None
            return run.lo, run.hi

    def entries(
        self, group: int, lo: int, hi: int, *, reverse: bool = False, limit: int | None = None
    ) -> list[tuple[int, bytes]]:
        """``(index, value)`` of ``group``'s live entries with ``lo <= index < hi``."""
        with self._ilock:
            run = self._runs.get(group)
            if run is None or not run.pos:
                return []
            a = max(lo, run.lo)
            b = min(hi, run.hi + 1)
            if a >= b:
                return []
            idx = range(b - 1, a - 1, -1) if reverse else range(a, b)
            if limit is not None:
                idx = idx[:limit]
            return [(i, self._read(run.pos[i - run.lo], run.lens[i - run.lo])) for i in idx]

    def hard_state(self, group: int) -> bytes | None:
        """The latest hard state written for ``group``."""
        with self._ilock:
            return self._hs.get(group)

    def set_hard_state_floor(self, group: int, value: bytes) -> None:
        """At open: the engine's copy of ``group``'s hard state (written with a snapshot
        install), used when no later record holds one."""
        with self._ilock:
            self._hs.setdefault(group, value)

    @property
    def segment_count(self) -> int:
        """How many segment files exist (no lock: for metrics scraped on the loop)."""
        return len(self._segments)

    @property
    def segments(self) -> list[int]:
        """Ids of the segment files, oldest first."""
        with self._ilock:
            return list(self._segments)

    def close(self) -> None:
        """Sync and close the files (idempotent)."""
        with self._wlock:
            if self._wfd >= 0:
                try:
                    os.fdatasync(self._wfd)
                except OSError as exc:
                    log.warning("raft WAL %s: sync at close failed: %s", self.directory, exc)
                os.close(self._wfd)
                self._wfd = -1
            with self._ilock:
                for fd in self._rfds.values():
                    os.close(fd)
                self._rfds.clear()


def _is_wal_op(ns: str, key: bytes) -> bool:
    return ns == NS_LOG or (ns == NS_STATE and len(key) == 9 and key[8] == _HS_SUFFIX)


class WalEngine:
    """The Raft host's engine when the log lives in a :class:`RaftWal`.

    ``raft_log`` and the hard states (``raft_state`` ``u64 group | b"h"``) go to the WAL;
    every other namespace and key to ``inner`` (the node's engine). See the module
    docstring for how a batch that touches both is ordered.

    :param sync: the default for ``write(sync=None)`` (``[storage] sync``).
    """

    def __init__(
        self,
        inner: StorageEngine,
        directory: str,
        *,
        sync: bool = True,
        segment_bytes: int = 64 * 1024 * 1024,
        max_segments: int = 16,
    ) -> None:
        self.inner = inner
        self.default_sync = sync
        for ns in (NS_LOG, NS_STATE):
            inner.create_namespace(ns)
        if self._inner_has_log():
            if os.path.isdir(directory):
                self._drop_inner_log()  # a migration stopped after its WAL was in place
            else:
                self._migrate(directory)
        barriers, inner_hs = self._inner_state()
        self.wal = RaftWal(
            directory, segment_bytes=segment_bytes, max_segments=max_segments, barriers=barriers
        )
        for g, v in inner_hs.items():
            self.wal.set_hard_state_floor(g, v)

    # ------------------------------------------------------------------ opening

    def _inner_state(self) -> tuple[dict[int, int], dict[int, bytes]]:
        barriers: dict[int, int] = {}
        hs: dict[int, bytes] = {}
        for k, v in self.inner.scan(NS_STATE):
            if len(k) != 9:
                continue
            g = _G.unpack_from(k)[0]
            if k[8:] == _BARRIER and len(v) == 8:
                barriers[g] = _LSN.unpack(v)[0]
            elif k[8] == _HS_SUFFIX:
                hs[g] = v
        return barriers, hs

    def _inner_has_log(self) -> bool:
        return any(True for _ in self.inner.scan(NS_LOG, limit=1))

    def _migrate(self, directory: str) -> None:
        """A data directory from before the WAL (or from ``log_storage = "engine"``):
        move its log and hard states into a new WAL, built aside and renamed into place,
        then delete them from the engine. A crash before the rename leaves the engine's
        copy in force; after it, the WAL's (the engine's leftovers are deleted again)."""
        tmp = directory + ".tmp"
        if os.path.isdir(tmp):
            for name in os.listdir(tmp):
                os.unlink(os.path.join(tmp, name))
            os.rmdir(tmp)
        wal = RaftWal(tmp)
        try:
            ops: list[tuple[int, str, bytes, bytes]] = []
            count = 0
            for k, v in self.inner.scan(NS_LOG):
                ops.append((OP_PUT, NS_LOG, k, v))
                if len(ops) >= 4096:
                    wal.write(ops, sync=False)
                    count += len(ops)
                    ops = []
            for k, v in self.inner.scan(NS_STATE):
                if len(k) == 9 and k[8] == _HS_SUFFIX:
                    ops.append((OP_PUT, NS_STATE, k, v))
            wal.write(ops, sync=False)
            count += len(ops)
            wal.sync()
        finally:
            wal.close()
        os.rename(tmp, directory)
        parent = os.open(os.path.dirname(os.path.abspath(directory)), os.O_RDONLY)
        try:
            os.fsync(parent)
        finally:
            os.close(parent)
        log.info("moved %d Raft log records from the storage engine into %s", count, directory)
        self._drop_inner_log()

    def _drop_inner_log(self) -> None:
        batch = WriteBatch()
        groups = set()
        for k, _ in self.inner.scan(NS_LOG):
            groups.add(_GI.unpack(k)[0])
        for g in sorted(groups):
            batch.delete_range(NS_LOG, _GI.pack(g, 0), _GI.pack(g + 1, 0))
        for k, _ in self.inner.scan(NS_STATE):
            if len(k) == 9 and k[8] == _HS_SUFFIX:
                batch.delete(NS_STATE, k)
        if batch:
            self.inner.write(batch, sync=True)

    # ------------------------------------------------------------------ StorageEngine

    @property
    def backend(self) -> str:
        """The inner engine's backend name."""
        return self.inner.backend

    @property
    def max_key_bytes(self) -> int:
        """The inner engine's key limit."""
        return self.inner.max_key_bytes

    def create_namespace(self, name: str) -> None:
        """Create ``name`` in the inner engine."""
        self.inner.create_namespace(name)

    def namespaces(self) -> list[str]:
        """The inner engine's namespaces."""
        return self.inner.namespaces()

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """A log entry or hard state from the WAL; anything else from the inner engine."""
        if namespace == NS_LOG:
            if len(key) != 16:
                return None
            g, i = _GI.unpack(key)
            got = self.wal.entries(g, i, i + 1)
            return got[0][1] if got else None
        if namespace == NS_STATE and len(key) == 9 and key[8] == _HS_SUFFIX:
            return self.wal.hard_state(_G.unpack_from(key)[0])
        return self.inner.get(namespace, key)

    def scan(
        self,
        namespace: str,
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Log entries of one group from the WAL (``start`` and ``end`` name the group);
        any other namespace from the inner engine."""
        if namespace != NS_LOG:
            return self.inner.scan(namespace, start, end, reverse=reverse, limit=limit)
        return self._scan_log(start, end, reverse, limit)

    def _scan_log(
        self, start: bytes | None, end: bytes | None, reverse: bool, limit: int | None
    ) -> Iterator[tuple[bytes, bytes]]:
        if start is None or len(start) != 16 or end is None or len(end) != 16:
            raise InvalidRequest("a raft WAL scan needs the group's bounds (16-byte keys)")
        rng = _log_range(start, end)
        if rng is None:
            raise InvalidRequest(f"a raft WAL scan spans groups ({start!r} to {end!r})")
        g, lo, hi = rng
        for i, v in self.wal.entries(g, lo, hi, reverse=reverse, limit=limit):
            yield _GI.pack(g, i), v

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        """Split ``batch`` between the WAL and the inner engine, in the order the module
        docstring gives."""
        do_sync = self.default_sync if sync is None else bool(sync)
        ops = batch.ops
        wal_ops = []
        inner = WriteBatch()
        wiped: list[int] = []
        prefix_drop = False
        for op in ops:
            kind, ns, k, v = op
            if _is_wal_op(ns, k):
                wal_ops.append(op)
                if kind == OP_DELETE_RANGE and ns == NS_LOG and len(k) == 16 and len(v) == 16:
                    rng = _log_range(k, v)
                    if rng is not None and rng[1] == 0:
                        if rng[2] == _END:
                            wiped.append(rng[0])
                        else:
                            prefix_drop = True
            else:
                inner.ops.append(op)
        if not wal_ops:
            self.inner.write(inner, sync=do_sync)
            return
        if wiped and inner.ops:
            # A snapshot install: the restored state first, with the barrier that hides
            # the wiped entries if the WAL's record never lands, and the hard state.
            lsn = self.wal.next_lsn()
            for g in wiped:
                inner.put(NS_STATE, _G.pack(g) + _BARRIER, _LSN.pack(lsn))
            for kind, ns, k, v in wal_ops:
                if ns == NS_STATE and kind == OP_PUT:
                    inner.put(ns, k, v)
            self.inner.write(inner, sync=do_sync)
            self.wal.write(wal_ops, sync=do_sync, lsn=lsn)
            return
        if prefix_drop and self.default_sync:
            self.inner.sync()  # the compaction this cleanup follows is durable first
        self.wal.write(wal_ops, sync=do_sync)
        if inner.ops:
            self.inner.write(inner, sync=do_sync)

    def sync(self) -> None:
        """Make the WAL and the inner engine durable."""
        self.wal.sync()
        self.inner.sync()

    def snapshot(self) -> StorageSnapshot:
        """A read view of the inner engine (state machines, snapshots, membership; not
        the log, which is only read live)."""
        return self.inner.snapshot()

    def stats(self) -> StorageStats:
        """The inner engine's statistics."""
        return self.inner.stats()

    def close(self) -> None:
        """Close the WAL and the inner engine."""
        self.wal.close()
        self.inner.close()
