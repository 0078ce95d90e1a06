"""Raft log storage on the node's storage engine, shared by every group on the node.

Owns: the on-disk layout of Raft state (entries, hard state, membership, snapshots) for
all groups in one :class:`atoll.core.StorageEngine`, the :class:`LogStorage` view the
core reads, and staging of each ``Ready`` into a shared :class:`WriteBatch` so the host
makes one write + one fsync per cycle for every group (DESIGN.md section 8).
Never: decides what to write (the core's ``Ready`` does) or calls ``engine.write`` itself.

Layout::

    raft_log    u64 group | u64 index   -> u64 term | u8 kind | data
    raft_state  u64 group | b"h"        -> hard state (JSON)
                u64 group | b"c"        -> conf state (JSON)
                u64 group | b"m"        -> snapshot meta (JSON)
                u64 group | b"d"        -> [index, term] of the last compacted entry
    raft_snap   u64 group               -> snapshot data
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from atoll.core import CorruptData, StorageEngine, StorageSnapshot, WriteBatch

from ._storage import LogCompacted, LogUnavailable, SnapshotOutOfDate
from ._types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta, limit_size

__all__ = ["NS_LOG", "NS_SNAP", "NS_STATE", "EngineLogStorage"]

NS_LOG = "raft_log"
NS_STATE = "raft_state"
NS_SNAP = "raft_snap"
_G = struct.Struct(">Q")
_GI = struct.Struct(">QQ")
_E = struct.Struct(">QB")
_TAIL_ENTRIES = 8192
"""Most recent entries kept in memory per group (terms for AppendEntries checks, entries
for sending to followers and applying) so the hot path never reads them back from disk."""
_TAIL_BYTES = 8 * 1024 * 1024


def _conf_doc(cs: ConfState) -> dict[str, Any]:
    return {
        "v": sorted(cs.voters),
        "vo": sorted(cs.voters_outgoing),
        "l": sorted(cs.learners),
        "ln": sorted(cs.learners_next),
        "al": cs.auto_leave,
        "ap": sorted(cs.auto_promote),
    }


def _conf_from(doc: dict[str, Any]) -> ConfState:
    return ConfState(
        voters=frozenset(doc["v"]),
        voters_outgoing=frozenset(doc["vo"]),
        learners=frozenset(doc["l"]),
        learners_next=frozenset(doc["ln"]),
        auto_leave=bool(doc["al"]),
        auto_promote=frozenset(doc["ap"]),
    )


class EngineLogStorage:
    """One group's Raft storage inside the node's shared engine.

    Reads go to the engine, except for the tail of the log: the most recent entries
    (up to ``_TAIL_ENTRIES`` / ``_TAIL_BYTES``) are kept in memory once written, as
    etcd-io/raft's storage keeps its entries. The first/last index, the snapshot
    metadata and the tail are updated by :meth:`commit_staged` once the host's batch is
    durable.
    """

    def __init__(self, engine: StorageEngine, group_id: int) -> None:
        self.engine = engine
        self.group_id = group_id
        self._prefix = _G.pack(group_id)
        for ns in (NS_LOG, NS_STATE, NS_SNAP):
            engine.create_namespace(ns)
        self._hs = self._load_hard_state()
        self._cs = self._load_conf_state()
        self._snap_meta = self._load_snap_meta()
        if self._cs is None:
            self._cs = self._snap_meta.conf_state
        lo, hi = self._log_bounds()
        last = None
        for k, _ in engine.scan(NS_LOG, lo, hi, reverse=True, limit=1):
            last = _GI.unpack(k)[1]
        dummy = self._json(b"d") or [self._snap_meta.index, self._snap_meta.term]
        self._dummy = (int(dummy[0]), int(dummy[1]))
        self._first = self._dummy[0] + 1
        self._last = last if last is not None and last >= self._first else self._dummy[0]
        self._staged: dict[str, Any] = {}
        self._tail: list[Entry] = []
        """Entries ``[_tail_lo, _last]`` held in memory (empty, or ending at ``_last``)."""
        self._tail_lo = 0
        self._tail_bytes = 0

    # ------------------------------------------------------------------ keys

    def _k(self, suffix: bytes) -> bytes:
        return self._prefix + suffix

    def _ek(self, index: int) -> bytes:
        return _GI.pack(self.group_id, index)

    def _log_bounds(self) -> tuple[bytes, bytes]:
        return _GI.pack(self.group_id, 0), _GI.pack(self.group_id + 1, 0)

    # ------------------------------------------------------------------ loading

    def _json(self, suffix: bytes, view: StorageSnapshot | None = None) -> Any:
        raw = (view or self.engine).get(NS_STATE, self._k(suffix))
        if raw is None:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CorruptData(
                f"raft state {suffix!r} of group {self.group_id} is not valid JSON: {exc}"
            ) from exc

    def _load_hard_state(self) -> HardState:
        doc = self._json(b"h")
        return HardState() if doc is None else HardState(doc["t"], doc["v"], doc["c"])

    def _load_conf_state(self) -> ConfState | None:
        doc = self._json(b"c")
        return None if doc is None else _conf_from(doc)

    def _load_snap_meta(self, view: StorageSnapshot | None = None) -> SnapshotMeta:
        doc = self._json(b"m", view)
        if doc is None:
            return SnapshotMeta()
        return SnapshotMeta(doc["i"], doc["t"], _conf_from(doc["c"]))

    @property
    def hard_state(self) -> HardState:
        """The hard state as last made durable."""
        return self._hs

    @property
    def is_empty(self) -> bool:
        """Whether nothing was ever stored for this group (a brand-new replica)."""
        return self._last == 0 and self._hs == HardState() and self._dummy[0] == 0

    # ------------------------------------------------------------------ LogStorage

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and membership."""
        assert self._cs is not None
        return self._hs, self._cs

    def first_index(self) -> int:
        """Snapshot index + 1."""
        return self._first

    def last_index(self) -> int:
        """Index of the last stored entry."""
        return self._last

    def term(self, index: int) -> int:
        """Term of entry ``index``."""
        if index == self._dummy[0]:
            return self._dummy[1]
        if index < self._first:
            raise LogCompacted(f"group {self.group_id}: index {index} is compacted")
        if index > self._last:
            raise LogUnavailable(f"group {self.group_id}: index {index} > last {self._last}")
        if self._tail and index >= self._tail_lo:
            return self._tail[index - self._tail_lo].term
        raw = self.engine.get(NS_LOG, self._ek(index))
        if raw is None:
            raise CorruptData(f"group {self.group_id}: log entry {index} is missing")
        return _E.unpack_from(raw)[0]  # type: ignore[no-any-return]

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)`` (at least one), at most ``max_bytes`` worth."""
        if lo < self._first:
            raise LogCompacted(f"group {self.group_id}: index {lo} is compacted")
        if hi > self._last + 1:
            raise LogUnavailable(f"group {self.group_id}: index {hi - 1} > last {self._last}")
        if self._tail and lo >= self._tail_lo:
            return limit_size(self._tail[lo - self._tail_lo : hi - self._tail_lo], max_bytes)
        out: list[Entry] = []
        total = 0
        for k, raw in self.engine.scan(NS_LOG, self._ek(lo), self._ek(hi)):
            index = _GI.unpack(k)[1]
            term, kind = _E.unpack_from(raw)
            e = Entry(index, term, raw[_E.size :], EntryKind(kind))
            out.append(e)
            total += e.size
            if max_bytes is not None and total > max_bytes:
                break
        if len(out) != hi - lo and (max_bytes is None or total <= max_bytes):
            raise CorruptData(
                f"group {self.group_id}: log entries [{lo}, {hi}) have gaps "
                f"({len(out)} of {hi - lo} found)"
            )
        return limit_size(out, max_bytes)

    @property
    def snapshot_index(self) -> int:
        """The index of the latest stored snapshot (0 if none)."""
        return self._snap_meta.index

    def snapshot(self) -> Snapshot:
        """The latest stored snapshot: its data and its metadata read together from one
        engine view. (A compaction's write may have landed while the host has not yet
        called :meth:`commit_staged`: pairing the engine's new data with the old
        metadata held in memory would describe one snapshot with another's state.)"""
        with self.engine.snapshot() as view:
            data = view.get(NS_SNAP, self._prefix) or b""
            meta = self._load_snap_meta(view)
        return Snapshot(meta, data)

    # ------------------------------------------------------------------ writes

    def stage(
        self,
        batch: WriteBatch,
        *,
        hard_state: HardState | None,
        entries: tuple[Entry, ...],
        snapshot: Snapshot | None,
    ) -> None:
        """Add one Ready's persistence to ``batch``; :meth:`commit_staged` after the write."""
        first, last = self._first, self._last
        snap_meta = self._snap_meta
        dummy = self._dummy
        if snapshot is not None and not snapshot.is_empty:
            if snapshot.meta.index <= snap_meta.index:
                raise SnapshotOutOfDate(
                    f"group {self.group_id}: snapshot {snapshot.meta.index} <= {snap_meta.index}"
                )
            lo, hi = self._log_bounds()
            batch.delete_range(NS_LOG, lo, hi)
            batch.put(NS_SNAP, self._prefix, snapshot.data)
            self._put_snap_meta(batch, snapshot.meta)
            self._put_conf(batch, snapshot.meta.conf_state)
            snap_meta = snapshot.meta
            dummy = (snap_meta.index, snap_meta.term)
            self._put_dummy(batch, dummy)
            last = snap_meta.index
            first = last + 1
        if entries:
            start = entries[0].index
            if start <= last:
                batch.delete_range(NS_LOG, self._ek(start), self._ek(last + 1))
            for e in entries:
                batch.put(NS_LOG, self._ek(e.index), _E.pack(e.term, int(e.kind)) + e.data)
            last = entries[-1].index
        if hard_state is not None:
            batch.put(
                NS_STATE,
                self._k(b"h"),
                orjson.dumps({"t": hard_state.term, "v": hard_state.vote, "c": hard_state.commit}),
            )
        self._staged = {
            "first": first,
            "last": last,
            "dummy": dummy,
            "snap": snap_meta,
            "hs": hard_state,
            "cs": snapshot.meta.conf_state if snapshot is not None else None,
            "entries": entries,
            "restored": snapshot is not None and not snapshot.is_empty,
        }

    def commit_staged(self) -> None:
        """The staged batch is durable: update the cached bounds and the in-memory tail."""
        s = self._staged
        if not s:
            return
        if s.get("restored"):
            self._drop_tail()
        entries = s.get("entries")
        if entries:
            self._extend_tail(entries)
        self._first, self._last, self._snap_meta = s["first"], s["last"], s["snap"]
        if self._tail and self._tail_lo < self._first:
            cut = min(len(self._tail), self._first - self._tail_lo)
            self._tail_bytes -= sum(e.size for e in self._tail[:cut])
            del self._tail[:cut]
            self._tail_lo += cut
        self._dummy = s["dummy"]
        if s["hs"] is not None:
            self._hs = s["hs"]
        if s["cs"] is not None:
            self._cs = s["cs"]
        self._staged = {}

    def _drop_tail(self) -> None:
        self._tail = []
        self._tail_lo = 0
        self._tail_bytes = 0

    def _extend_tail(self, entries: tuple[Entry, ...]) -> None:
        tail = self._tail
        start = entries[0].index
        if tail and self._tail_lo <= start <= self._tail_lo + len(tail):
            cut = start - self._tail_lo
            if cut < len(tail):  # a new leader overwrote a suffix
                self._tail_bytes -= sum(e.size for e in tail[cut:])
                del tail[cut:]
        else:
            tail.clear()
            self._tail_lo = start
            self._tail_bytes = 0
        tail.extend(entries)
        self._tail_bytes += sum(e.size for e in entries)
        if len(tail) > _TAIL_ENTRIES or self._tail_bytes > _TAIL_BYTES:
            # Trim to half the budget at once, so trimming costs O(1) per entry overall.
            keep = len(tail)
            kept_bytes = self._tail_bytes
            while keep > 1 and (keep > _TAIL_ENTRIES // 2 or kept_bytes > _TAIL_BYTES // 2):
                kept_bytes -= tail[len(tail) - keep].size
                keep -= 1
            cut = len(tail) - keep
            del tail[:cut]
            self._tail_lo += cut
            self._tail_bytes = kept_bytes

    def stage_conf_state(self, batch: WriteBatch, cs: ConfState) -> None:
        """Persist the membership in force (after a conf change was applied)."""
        self._put_conf(batch, cs)
        self._cs = cs

    def stage_bootstrap(self, batch: WriteBatch, voters: list[str]) -> None:
        """A brand-new group: record its initial membership."""
        cs = ConfState(voters=frozenset(voters))
        self._put_conf(batch, cs)
        self._cs = cs
        self._snap_meta = SnapshotMeta(0, 0, cs)

    def stage_compaction(
        self, batch: WriteBatch, meta: SnapshotMeta, data: bytes, compact_to: int
    ) -> None:
        """Store a state-machine snapshot taken at ``meta.index`` and compact the log up
        to ``compact_to`` (never past ``meta.index``).

        The compacted entries stay in the engine until :meth:`stage_log_cleanup` after
        :meth:`commit_staged`: between this batch's write and that call, readers still
        see the old first index and must find the entries it promises."""
        compact_to = min(compact_to, meta.index, self._last)
        batch.put(NS_SNAP, self._prefix, data)
        self._put_snap_meta(batch, meta)
        dummy = self._dummy
        if compact_to >= self._first:
            dummy = (compact_to, self.term(compact_to))
            self._put_dummy(batch, dummy)
        self._staged = {
            "first": dummy[0] + 1,
            "last": self._last,
            "dummy": dummy,
            "snap": meta,
            "hs": None,
            "cs": None,
        }

    def stage_log_cleanup(self, batch: WriteBatch) -> None:
        """Delete the entries below the first index (left by a committed compaction;
        nothing reads them: a restart starts the log after the stored dummy entry)."""
        if self._first > 1:
            batch.delete_range(NS_LOG, self._ek(0), self._ek(self._first))

    def _put_snap_meta(self, batch: WriteBatch, meta: SnapshotMeta) -> None:
        batch.put(
            NS_STATE,
            self._k(b"m"),
            orjson.dumps({"i": meta.index, "t": meta.term, "c": _conf_doc(meta.conf_state)}),
        )

    def _put_dummy(self, batch: WriteBatch, dummy: tuple[int, int]) -> None:
        batch.put(NS_STATE, self._k(b"d"), orjson.dumps(list(dummy)))

    def _put_conf(self, batch: WriteBatch, cs: ConfState) -> None:
        batch.put(NS_STATE, self._k(b"c"), orjson.dumps(_conf_doc(cs)))
