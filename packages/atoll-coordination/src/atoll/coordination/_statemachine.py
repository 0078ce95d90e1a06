"""The key-value state machine: applies committed commands of many partitions to one engine.

Owns: the on-disk key layout of user data, per-partition applied indexes and the client
session table; applying put/delete/cas/batch deterministically; reads.
Never: decides what is committed (Raft does) or writes outside the batch it is handed.
The applied index goes in the same batch as the data it covers, so they land together:
in the Raft host's log write, or (on a node, where the state machine reads through a
:class:`~atoll.replication.WriteBackEngine`) in the write-back the host makes once per
tick; after a crash the host replays the log from the applied index the engine holds.

Key layout (one storage engine, shared by every partition hosted on the node; the
"partition" number here is the partition's Raft group id, unique across keyspaces)::

    kv          u32 partition | user key           -> value
    kv_session  u32 partition | "m" | client id    -> u64 acked floor | u64 last index
                                                       | u64 highest seq applied
                u32 partition | "r" | u16 len | client id | u64 seq -> result of that seq
    kv_applied  u32 partition                      -> u64 applied index

Sessions (Raft thesis 6.3): each command carries (client id, seq, acked). Results of seqs
at or above ``acked`` are kept, so a retried command gets its first answer instead of
being applied twice, even when a client has several commands in flight. The highest seq
applied per client lets a new seq (the common case: a client's commands reach one
partition's leader in order) skip the lookup of a stored result. A session is
forgotten once ``session_window`` entries of its partition pass without it (a
deterministic rule, so every replica forgets the same sessions at the same index).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from atoll.core import (
    Frame,
    InvalidRequest,
    StorageEngine,
    StorageSnapshot,
    WriteBatch,
    decode_frame,
    encode_frame,
)

from ._commands import (
    CasCommand,
    Command,
    CommandResult,
    DeleteCommand,
    PutCommand,
    decode_command,
    decode_result,
    encode_result,
)

__all__ = [
    "KVStateMachine",
    "PartitionApply",
    "PartitionStateMachine",
    "data_key",
    "partition_range",
]

NS_DATA = "kv"
NS_SESSION = "kv_session"
NS_APPLIED = "kv_applied"
NAMESPACES = (NS_DATA, NS_SESSION, NS_APPLIED)

_P = struct.Struct(">I")
_Q = struct.Struct(">Q")
_QQ = struct.Struct(">QQ")
_QQQ = struct.Struct(">QQQ")
_UNKNOWN_SEQ = 2**64 - 1
"""Highest seq of a session record written before it was recorded: every seq is looked up."""
_H = struct.Struct(">H")
_MISSING = object()

_DONE = CommandResult()
"""The result of every put, batch and no-op (frozen, so one instance serves all)."""
_ACKED = CommandResult(ok=False, duplicate=True)
"""The answer to a retry of a seq the client already acknowledged receiving."""


def data_key(partition: int, key: bytes) -> bytes:
    """The engine key of user ``key`` in ``partition``."""
    return _P.pack(partition) + key


def partition_range(partition: int) -> tuple[bytes, bytes]:
    """``[start, end)`` engine bounds covering every key of ``partition``."""
    return _P.pack(partition), _P.pack(partition + 1)


def _session_meta_key(partition: int, client: bytes) -> bytes:
    return _P.pack(partition) + b"m" + client


def _session_result_prefix(partition: int, client: bytes) -> bytes:
    return _P.pack(partition) + b"r" + _H.pack(len(client)) + client


def _decode_meta(raw: bytes) -> tuple[int, int, int]:
    """(acked floor, last index, highest seq) of a session record (older records have
    no highest seq: :data:`_UNKNOWN_SEQ` makes every seq look possibly applied)."""
    if len(raw) == _QQ.size:
        return (*_QQ.unpack(raw), _UNKNOWN_SEQ)
    acked, last, top = _QQQ.unpack(raw)
    return acked, last, top


class PartitionApply:
    """Applies a run of committed entries of one partition into a shared WriteBatch.

    Reads see the effect of entries applied earlier in the same run (an overlay), so a
    cas after a put in the same tick sees the put before anything reaches the disk.

    Session records are small and constant-size per command: one meta record per client
    (acked floor, last index, highest seq) and one result record per unacknowledged seq.
    A result is deleted (a point delete) in the run that acknowledges it: it is never
    read again, since a seq below the floor is answered from the floor. The seqs with a
    stored result are kept per client in a heap the state machine caches between runs
    (loaded by one scan the first time a process meets the client in a partition), so a
    client with many commands in flight costs O(log n) per command, not O(in flight).
    No range delete is written on this path: an LSM engine (RocksDB) pays for every
    range tombstone in its memtable on every read. The meta records are cached by the
    state machine between runs too.
    """

    def __init__(self, sm: KVStateMachine, partition: int, batch: WriteBatch) -> None:
        self._sm = sm
        self.partition = partition
        self.batch = batch
        self._overlay: dict[bytes, bytes | None] = {}
        self._meta: dict[bytes, tuple[int, int, int] | None] = {}
        self._results: dict[tuple[bytes, int], bytes | None] = {}
        """Results stored (or deleted: None) in this run, by (client, seq)."""
        self._live = sm._live.setdefault(partition, {})
        """The state machine's cache, per client, of the heap of seqs with a stored
        result in this partition (popped and deleted as acks rise)."""
        self.applied = sm._last_applied(partition)
        self._applied_at_start = self.applied
        self._sessions = sm._sessions.setdefault(partition, {})
        """The state machine's cache of this partition's session records."""
        self._dirty: set[bytes] = set()
        """Clients whose session record changed in this run."""

    def _get(self, key: bytes) -> bytes | None:
        v = self._overlay.get(key, _MISSING)
        if v is not _MISSING:
            return v  # type: ignore[return-value]
        return self._sm.engine.get(NS_DATA, data_key(self.partition, key))

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._overlay[key] = value
        if value is None:
            self.batch.delete(NS_DATA, data_key(self.partition, key))
        else:
            self.batch.put(NS_DATA, data_key(self.partition, key), value)

    def _session_meta(self, client: bytes) -> tuple[int, int, int] | None:
        if client not in self._meta:
            known = self._sessions.get(client)  # the cache never holds None
            if known is None:
                raw = self._sm.engine.get(NS_SESSION, _session_meta_key(self.partition, client))
                known = _decode_meta(raw) if raw is not None else None
            self._meta[client] = known
        return self._meta[client]

    def _stored_seqs(self, client: bytes, *, has_session: bool = True) -> list[int]:
        """The heap of ``client``'s seqs with a stored result, read from the engine by a
        scan the first time this process needs it (the cache is coherent afterwards:
        every change to it is also written to the run's batch). A client without a
        session record has none (results are written and deleted with the record), so
        a new client costs no scan."""
        mine = self._live.get(client)
        if mine is None:
            mine = []
            if has_session:
                prefix = _session_result_prefix(self.partition, client)
                skip = len(prefix)
                mine = [
                    _Q.unpack(k[skip:])[0]
                    for k, _ in self._sm.engine.scan(NS_SESSION, prefix, prefix + b"\xff" * 9)
                    if len(k) == skip + 8
                ]
                heapq.heapify(mine)
            self._live[client] = mine
        return mine

    def _cached_result(self, client: bytes, seq: int) -> bytes | None:
        v = self._results.get((client, seq), _MISSING)
        if v is not _MISSING:
            return v  # type: ignore[return-value]
        key = _session_result_prefix(self.partition, client) + _Q.pack(seq)
        return self._sm.engine.get(NS_SESSION, key)

    def apply(self, index: int, data: bytes) -> CommandResult:
        """Apply the entry at ``index`` (payload ``data``) and return its result.

        An empty payload (a leader's no-op) only advances the applied index.
        Entries at or below the applied index are ignored (replay after restart).
        """
        if index <= self.applied:
            return CommandResult(duplicate=True)
        self.applied = index
        if index % self._sm.session_sweep_every == 0:
            self._expire_sessions(index)
        if not data:
            return _DONE
        cmd = decode_command(data)
        if not cmd.client_id:
            return self._execute(cmd)
        client = cmd.client_id.encode()
        seq = cmd.seq
        meta = self._session_meta(client)
        if meta is not None:
            acked, _, top = meta
            if seq < acked:
                # The client already received this seq's answer; never re-apply. (Its
                # stored result may still exist: they are deleted in batches.)
                return _ACKED
            # A seq above the highest applied one is new: no stored result to look up.
            if seq <= top:
                cached = self._cached_result(client, seq)
                if cached is not None:
                    r = decode_result(cached)
                    return CommandResult(r.ok, r.previous, r.existed, duplicate=True)
        else:
            acked = top = 0
        has_session = meta is not None
        result = self._execute(cmd)
        new_acked = acked if cmd.acked <= acked else cmd.acked
        if new_acked > acked:
            # The acknowledged results are never read again: deleted now.
            mine = self._stored_seqs(client, has_session=has_session)
            if mine and mine[0] < new_acked:
                prefix = _session_result_prefix(self.partition, client)
                while mine and mine[0] < new_acked:
                    done = heapq.heappop(mine)
                    self._results[(client, done)] = None
                    self.batch.delete(NS_SESSION, prefix + _Q.pack(done))
        if seq >= new_acked:
            encoded = encode_result(result)
            self._results[(client, seq)] = encoded
            heapq.heappush(self._stored_seqs(client, has_session=has_session), seq)
            self.batch.put(
                NS_SESSION,
                _session_result_prefix(self.partition, client) + _Q.pack(seq),
                encoded,
            )
        self._meta[client] = (new_acked, index, seq if seq > top else top)
        self._dirty.add(client)
        return result

    def finish(self) -> None:
        """Write what a run changed once, however many entries it applied: the applied
        index and each touched client's session record."""
        if self.applied > self._applied_at_start:
            self.batch.put(NS_APPLIED, _P.pack(self.partition), _Q.pack(self.applied))
        for client in self._dirty:
            meta = self._meta.get(client)
            if meta is not None:
                self.batch.put(
                    NS_SESSION, _session_meta_key(self.partition, client), _QQQ.pack(*meta)
                )
        for client, meta in self._meta.items():
            if meta is None:
                self._sessions.pop(client, None)
            else:
                self._sessions[client] = meta
        self._dirty.clear()
        self._applied_at_start = self.applied
        self._sm._applied[self.partition] = self.applied

    def _execute(self, cmd: Command) -> CommandResult:
        if isinstance(cmd, PutCommand):
            self._set(cmd.key, cmd.value)
            return _DONE
        if isinstance(cmd, DeleteCommand):
            prev = self._get(cmd.key)
            if prev is not None:
                self._set(cmd.key, None)
            return CommandResult(previous=prev, existed=prev is not None)
        if isinstance(cmd, CasCommand):
            prev = self._get(cmd.key)
            if prev != cmd.expected:
                return CommandResult(ok=False, previous=prev, existed=prev is not None)
            self._set(cmd.key, cmd.new)
            return CommandResult(previous=prev, existed=prev is not None)
        for key, value in cmd.items:
            self._set(key, value)
        return _DONE

    def _expire_sessions(self, index: int) -> None:
        horizon = index - self._sm.session_window
        lo = _P.pack(self.partition) + b"m"
        hi = _P.pack(self.partition) + b"n"
        # Read the records first: an expired client's results are scanned below.
        for k, raw in list(self._sm.engine.scan(NS_SESSION, lo, hi)):
            client = k[len(lo) :]
            meta = self._meta.get(client, _MISSING)
            current = _decode_meta(raw) if meta is _MISSING else meta
            if isinstance(current, tuple) and current[1] < horizon:
                self._meta[client] = None
                self.batch.delete(NS_SESSION, k)
                prefix = _session_result_prefix(self.partition, client)
                for seq in self._stored_seqs(client):
                    self._results[(client, seq)] = None
                    self.batch.delete(NS_SESSION, prefix + _Q.pack(seq))
                del self._live[client]


class KVStateMachine:
    """The state machine of every data partition on a node (one engine, many partitions).

    :param session_window: log entries after which an idle client's session expires.
    :param session_sweep_every: applied entries between sweeps for expired sessions.
    """

    def __init__(
        self,
        engine: StorageEngine,
        *,
        session_window: int = 100_000,
        session_sweep_every: int = 4096,
    ) -> None:
        self.engine = engine
        self.session_window = session_window
        self.session_sweep_every = session_sweep_every
        for ns in NAMESPACES:
            engine.create_namespace(ns)
        self._applied: dict[int, int] = {}
        """Per partition, the last index applied into a batch (the Raft host writes every
        batch, in order, before it applies more), so an apply run need not ask the
        engine where the previous one stopped."""
        self._sessions: dict[int, dict[bytes, tuple[int, int, int]]] = {}
        """Per partition, the session records applied so far (kept coherent the same
        way), so an apply run need not read a client's record from the engine."""
        self._live: dict[int, dict[bytes, list[int]]] = {}
        """Per partition and client, the heap of seqs with a stored result (kept
        coherent the same way; see :class:`PartitionApply`)."""

    def applied_index(self, partition: int) -> int:
        """The last log index applied to ``partition`` as reads see it (0 if none): in the
        engine, or staged in the write-back buffer when the engine is one."""
        raw = self.engine.get(NS_APPLIED, _P.pack(partition))
        return _Q.unpack(raw)[0] if raw else 0

    def _last_applied(self, partition: int) -> int:
        applied = self._applied.get(partition)
        if applied is None:
            applied = self._applied[partition] = self.applied_index(partition)
        return applied

    def begin(self, partition: int, batch: WriteBatch) -> PartitionApply:
        """Start applying entries of ``partition`` into ``batch``."""
        return PartitionApply(self, partition, batch)

    def get(self, partition: int, key: bytes) -> bytes | None:
        """Read ``key`` of ``partition`` as of the last apply that reads see (written, or
        staged in the write-back buffer)."""
        return self.engine.get(NS_DATA, data_key(partition, key))

    def scan(
        self, partition: int, start: bytes = b"", end: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` of ``partition`` with ``start <= key < end``."""
        lo = data_key(partition, start)
        hi = data_key(partition, end) if end is not None else partition_range(partition)[1]
        for k, v in self.engine.scan(NS_DATA, lo, hi, limit=limit):
            yield k[4:], v

    def snapshot_partition(self, partition: int, view: StorageSnapshot | None = None) -> bytes:
        """Serialise every key, value and session of ``partition`` (for a Raft snapshot)
        from ``view`` (an engine read view, left open), or from a view of its own.
        Reads nothing but the view, so it may run on another thread."""
        if view is None:
            with self.engine.snapshot() as own:
                return self.snapshot_partition(partition, own)
        lo, hi = partition_range(partition)
        atts: list[bytes] = []
        counts = []
        for ns in (NS_DATA, NS_SESSION):
            n = 0
            for k, v in view.scan(ns, lo, hi):
                atts += (k[4:], v)
                n += 1
            counts.append(n)
        applied = view.get(NS_APPLIED, _P.pack(partition))
        idx = _Q.unpack(applied)[0] if applied else 0
        return encode_frame(Frame("kvsnap", {"n": counts, "i": idx}, tuple(atts)))

    def restore_partition(self, partition: int, data: bytes, batch: WriteBatch) -> int:
        """Replace ``partition``'s contents with a snapshot, into ``batch``; returns its index."""
        f = decode_frame(data)
        n_data, n_sess = f.header["n"]
        lo, hi = partition_range(partition)
        batch.delete_range(NS_DATA, lo, hi)
        batch.delete_range(NS_SESSION, lo, hi)
        a = f.attachments
        for i in range(n_data):
            batch.put(NS_DATA, data_key(partition, a[2 * i]), a[2 * i + 1])
        off = 2 * n_data
        for i in range(n_sess):
            batch.put(NS_SESSION, data_key(partition, a[off + 2 * i]), a[off + 2 * i + 1])
        index = int(f.header["i"])
        batch.put(NS_APPLIED, _P.pack(partition), _Q.pack(index))
        self._applied[partition] = index
        self._sessions.pop(partition, None)
        self._live.pop(partition, None)
        return index


class PartitionStateMachine:
    """One partition's view of the :class:`KVStateMachine`, as a Raft group applies it.

    Implements the Raft host's ``GroupStateMachine`` protocol: conf-change entries only
    advance the applied index; normal entries are commands (an empty one is a no-op).
    """

    def __init__(self, kv: KVStateMachine, partition: int) -> None:
        self.kv = kv
        self.partition = partition

    @property
    def state_engine(self) -> StorageEngine:
        """The engine the state machine reads (a Raft host given this same object as
        its write-back buffer sends this partition's writes to it)."""
        return self.kv.engine

    def applied_index(self) -> int:
        """The last applied index of this partition."""
        return self.kv.applied_index(self.partition)

    def apply(self, entries: Sequence[Any], batch: WriteBatch) -> list[Any]:
        """Apply committed entries; returns a :class:`CommandResult` (or an error) each."""
        run = self.kv.begin(self.partition, batch)
        out: list[Any] = []
        for e in entries:
            data = e.data if int(e.kind) == 0 else b""
            try:
                out.append(run.apply(e.index, data))
            except InvalidRequest as exc:
                # A malformed command is answered, never allowed to stop the group.
                run.apply(e.index, b"")
                out.append(exc)
        run.finish()
        return out

    def snapshot(self) -> bytes:
        """The partition's data and sessions."""
        return self.kv.snapshot_partition(self.partition)

    def snapshot_at(self, view: StorageSnapshot) -> bytes:
        """The partition's data and sessions as ``view`` holds them (the Raft host calls
        this on its snapshot thread, with a view of exactly the applied state)."""
        return self.kv.snapshot_partition(self.partition, view)

    def restore(self, data: bytes, batch: WriteBatch) -> None:
        """Replace the partition's data with a snapshot."""
        self.kv.restore_partition(self.partition, data, batch)
