"""A write-back buffer in front of the storage engine for state-machine writes.

Owns: :class:`WriteBackEngine`, the overlay of state-machine writes applied but not yet
written to the engine, and reads that see them.
Never: writes to the engine itself (the Raft host takes the pending writes and writes
them on its writer thread), or holds anything the Raft log cannot rebuild.

Why (etcd's backend batch interval, TiKV's apply batching): with many partitions every
write of the state machine dirties a B-tree page of its own (the key, the client's
session record, the partition's applied index), so writing the applied state with every
log fsync made each synced write several times larger than the log entries it made
durable. The applied state does not need that fsync: the log holds every committed entry
and a restarted node replays the log from the applied index the engine holds. So a
state machine reads and writes through this buffer, and the host writes the buffer to
the engine once per tick (or sooner when it grows), in one write that coalesces every
page the interval touched. The log is compacted only at a snapshot, and the host writes
the buffer out before it builds one, so the entries after the engine's applied index are
always still in the log.

Reads see the buffer: a get or scan answers from the writes staged here first, then
from the engine. Staged writes keep their order: a later put wins over an earlier range
delete of the same key and the other way round.

A batch taken for the engine holds only the last write of each key staged since the
previous take (a client's session record and a partition's applied index are rewritten
by every apply run; a stored result is often written and deleted within one interval),
in key order: the interval's range deletes first, then the puts, then the deletes.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

from atoll.core import (
    StorageEngine,
    StorageSnapshot,
    StorageStats,
    WriteBatch,
)
from atoll.core.storagekit import OP_DELETE, OP_PUT

__all__ = ["WriteBackEngine"]


class WriteBackEngine:
    """A :class:`~atoll.core.StorageEngine` whose writes are staged in memory until the
    Raft host writes them to ``engine`` (see the module docstring).

    The host calls :meth:`stage` with each cycle's state-machine writes, :meth:`take`
    to start writing what is staged, and :meth:`flushed` once that write is in the
    engine. Until then every staged write is visible to :meth:`get` and :meth:`scan`.
    """

    def __init__(self, engine: StorageEngine) -> None:
        self.engine = engine
        """The engine underneath."""
        self._seq = 0
        self._over: dict[tuple[str, bytes], tuple[int, bytes | None]] = {}
        """(namespace, key) -> (seq of the last staged write of it, value or None)."""
        self._ranges: dict[str, list[tuple[int, bytes, bytes]]] = {}
        """Per namespace, staged range deletes: (seq, start, end)."""
        self._pending = 0
        """Operations staged since the last take."""
        self._last_take = 0
        """The seq of the last staged operation the last take covered."""
        self._taken: list[tuple[int, list[tuple[str, bytes]]]] = []
        """Each batch taken and not yet flushed, in order: its last seq and the keys it
        covers (so a flush drops exactly those from the overlay)."""

    # ------------------------------------------------------------ the host's side

    def stage(self, batch: WriteBatch) -> None:
        """Add ``batch``'s operations, in order, after everything staged before."""
        seq = self._seq
        over = self._over
        for op, ns, a, b in batch.ops:
            seq += 1
            if op == OP_PUT:
                over[(ns, a)] = (seq, b)
            elif op == OP_DELETE:
                over[(ns, a)] = (seq, None)
            else:
                self._ranges.setdefault(ns, []).append((seq, a, b))
        self._seq = seq
        self._pending += len(batch.ops)

    @property
    def pending_ops(self) -> int:
        """Operations staged and not yet taken."""
        return self._pending

    @property
    def unflushed(self) -> bool:
        """Whether anything staged is not yet in the engine."""
        return bool(self._pending) or bool(self._taken)

    def take(self) -> tuple[WriteBatch, int]:
        """The effect of the operations staged since the last take, as one batch for the
        engine, and the mark to pass to :meth:`flushed` once it is written. Batches must
        be written in the order they are taken.

        The batch holds the range deletes staged since the last take, in order, then the
        last write of each key staged since then that no later range delete covers: the
        puts, then the deletes, each in (namespace, key) order (long runs for the
        engine; writes to distinct keys commute).
        """
        since = self._last_take
        seq = self._seq
        batch = WriteBatch()
        window: list[tuple[int, str, bytes, bytes]] = []
        for ns, staged_ranges in self._ranges.items():
            for rseq, lo, hi in staged_ranges:
                if rseq > since:
                    window.append((rseq, ns, lo, hi))
        window.sort()
        for _, ns, lo, hi in window:
            batch.delete_range(ns, lo, hi)
        puts: list[tuple[str, bytes, bytes]] = []
        deletes: list[tuple[str, bytes]] = []
        covered: list[tuple[str, bytes]] = []
        for item in self._over.items():
            (ns, key), (kseq, value) = item
            if kseq <= since:
                continue
            covered.append(item[0])
            if window and any(
                rseq > kseq and rns == ns and lo <= key < hi for rseq, rns, lo, hi in window
            ):
                continue  # the range delete, written first, removes it
            if value is None:
                deletes.append((ns, key))
            else:
                puts.append((ns, key, value))
        puts.sort()
        for ns, key, value in puts:
            batch.put(ns, key, value)
        deletes.sort()
        for ns, key in deletes:
            batch.delete(ns, key)
        self._pending = 0
        self._last_take = seq
        self._taken.append((seq, covered))
        return batch, seq

    def flushed(self, mark: int) -> None:
        """The batch :meth:`take` returned with ``mark`` (and every one before it) is in
        the engine: reads of what it wrote go to the engine again."""
        taken = self._taken
        if not taken or mark < taken[0][0]:
            return  # already done
        over = self._over
        while taken and taken[0][0] <= mark:
            for k in taken.pop(0)[1]:
                e = over.get(k)
                if e is not None and e[0] <= mark:
                    del over[k]
        for ns in list(self._ranges):
            left = [r for r in self._ranges[ns] if r[0] > mark]
            if left:
                self._ranges[ns] = left
            else:
                del self._ranges[ns]

    # ------------------------------------------------------------------ reads

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """The value of ``key`` with every staged write applied, or None."""
        hit = self._over.get((namespace, key))
        ranges = self._ranges.get(namespace)
        if hit is not None:
            seq, value = hit
            if ranges:
                for rseq, lo, hi in ranges:
                    if rseq > seq and lo <= key < hi:
                        return None
            return value
        if ranges:
            for _, lo, hi in ranges:
                if lo <= key < hi:
                    return None
        return self.engine.get(namespace, key)

    def scan(
        self,
        namespace: str,
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` with ``start <= key < end`` in byte order (highest
        first with ``reverse``), staged writes applied."""
        if limit is not None and limit <= 0:
            return
        ranges = self._ranges.get(namespace) or []
        staged: list[tuple[bytes, int, bytes | None]] = [
            (k, seq, v)
            for (ns, k), (seq, v) in self._over.items()
            if ns == namespace and (start is None or k >= start) and (end is None or k < end)
        ]
        if not staged and not ranges:
            yield from self.engine.scan(namespace, start, end, reverse=reverse, limit=limit)
            return
        staged.sort(reverse=reverse)
        overridden = {k for k, _, _ in staged}

        def live_staged() -> Iterator[tuple[bytes, bytes]]:
            for k, seq, v in staged:
                if v is not None and not any(
                    rseq > seq and lo <= k < hi for rseq, lo, hi in ranges
                ):
                    yield k, v

        def live_engine() -> Iterator[tuple[bytes, bytes]]:
            for k, v in self.engine.scan(namespace, start, end, reverse=reverse):
                if k in overridden or any(lo <= k < hi for _, lo, hi in ranges):
                    continue
                yield k, v

        def key(kv: tuple[bytes, bytes]) -> Any:
            return kv[0]

        merged = heapq.merge(live_staged(), live_engine(), key=key, reverse=reverse)
        for n, kv in enumerate(merged):
            if limit is not None and n >= limit:
                return
            yield kv

    # ------------------------------------------------------------- the rest

    @property
    def backend(self) -> str:
        """The engine's backend name."""
        return self.engine.backend

    @property
    def max_key_bytes(self) -> int:
        """The engine's key size limit."""
        return self.engine.max_key_bytes

    def create_namespace(self, name: str) -> None:
        """Create ``name`` in the engine (idempotent)."""
        self.engine.create_namespace(name)

    def namespaces(self) -> list[str]:
        """The engine's namespaces."""
        return self.engine.namespaces()

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        """Stage ``batch`` (the host writes it out). ``sync=True`` is refused: what is
        staged becomes durable only when the host writes it."""
        if sync:
            raise ValueError("a write-back buffer cannot write synchronously; stage instead")
        self.stage(batch)

    def sync(self) -> None:
        """Sync the engine (staged writes are not in it until the host writes them)."""
        self.engine.sync()

    def snapshot(self) -> StorageSnapshot:
        """A read view of the engine; only when nothing staged is unwritten (the host
        writes the buffer out before it builds a snapshot)."""
        if self.unflushed:
            raise RuntimeError("state-machine writes are still staged: write them out first")
        return self.engine.snapshot()

    def stats(self) -> StorageStats:
        """The engine's figures."""
        return self.engine.stats()

    def close(self) -> None:
        """Close the engine (staged writes are dropped: the log rebuilds them)."""
        self.engine.close()
