"""The log storage the Raft core reads from, and an in-memory implementation.

Owns: the :class:`LogStorage` protocol (the core's read-only view of what is durable:
hard state, membership, entries, terms, the latest snapshot) and
:class:`MemoryLogStorage`, which tests and the simulator use as a node's "disk".
Never: is written by the core. The shell persists each ``Ready`` into storage and only
then calls ``advance``; a storage-engine implementation lives in the shell's package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from atoll.core import AtollError, WriteBatch

from ._types import ConfState, Entry, HardState, Snapshot, SnapshotMeta, limit_size

__all__ = [
    "GroupStateMachine",
    "LogCompacted",
    "LogStorage",
    "LogUnavailable",
    "MemoryLogStorage",
    "SnapshotOutOfDate",
    "SnapshotTemporarilyUnavailable",
    "limit_size",
]


class LogCompacted(AtollError):
    """The requested index is below the first retained index (it is in the snapshot)."""

    code = "raft_log_compacted"


class LogUnavailable(AtollError):
    """The requested index is above the last stored index."""

    code = "raft_log_unavailable"


class SnapshotOutOfDate(AtollError):
    """A snapshot older than the one already stored was offered."""

    code = "raft_snapshot_out_of_date"


class SnapshotTemporarilyUnavailable(AtollError):
    """The storage is still producing a snapshot; the leader tries again later."""

    code = "raft_snapshot_unavailable"
    retryable = True


@runtime_checkable
class LogStorage(Protocol):
    """What the Raft core may read from durable storage.

    Index conventions follow etcd: the snapshot covers ``[.., first_index() - 1]``, the
    stored entries are ``[first_index(), last_index()]`` and ``term(first_index() - 1)``
    is the snapshot's term.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and membership, read once when a node starts."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``, at least one if ``lo < hi``, at most ``max_bytes`` worth.

        Raises :class:`LogCompacted` if ``lo < first_index()``.
        """
        ...

    def term(self, index: int) -> int:
        """The term of entry ``index`` (``first_index() - 1`` answers the snapshot term).

        Raises :class:`LogCompacted` or :class:`LogUnavailable` outside that range.
        """
        ...

    def first_index(self) -> int:
        """The index of the first entry still stored (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """The index of the last stored entry (the snapshot index if none)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (may raise :class:`SnapshotTemporarilyUnavailable`)."""
        ...


class MemoryLogStorage:
    """A :class:`LogStorage` kept in memory, with the writes a shell would make.

    In the simulator each node's ``MemoryLogStorage`` is its disk: only what the node
    persisted (``set_hard_state``, ``append``, ``apply_snapshot``) survives a crash.
    """

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMeta(conf_state=conf_state or ConfState()))
        # _ents[0] is a dummy standing for the snapshot position.
        self._ents: list[Entry] = [Entry(0, 0)]
        self._conf_state = conf_state or ConfState()

    @classmethod
    def bootstrap(
        cls, voters: list[str], learners: tuple[str, ...] = (), data: bytes = b""
    ) -> MemoryLogStorage:
        """A fresh storage for an initial member of a new group.

        The membership is recorded in a snapshot at index 1 (term 1, state ``data``), so
        a node added later with an empty log learns it from that snapshot.
        """
        cs = ConfState(voters=frozenset(voters), learners=frozenset(learners))
        storage = cls(cs)
        storage.append([Entry(1, 1)])
        storage.create_snapshot(1, cs, data)
        storage.compact(1)
        return storage

    # -- LogStorage ------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The stored hard state and membership."""
        return self._hard_state, self._conf_state

    def first_index(self) -> int:
        """Snapshot index + 1."""
        return self._ents[0].index + 1

    def last_index(self) -> int:
        """Index of the last stored entry."""
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        """Term of entry ``index``."""
        offset = self._ents[0].index
        if index < offset:
            raise LogCompacted(f"index {index} is compacted (first retained {offset + 1})")
        if index - offset >= len(self._ents):
            raise LogUnavailable(f"index {index} is past the last index {self.last_index()}")
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)`` limited to ``max_bytes``."""
        offset = self._ents[0].index
        if lo <= offset:
            raise LogCompacted(f"index {lo} is compacted (first retained {offset + 1})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"entries up to {hi - 1} requested, last is {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        """The latest snapshot."""
        return self._snapshot

    # -- writes (the shell's side) ---------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        """The stored hard state."""
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        """Persist ``hs``."""
        self._hard_state = hs

    def set_conf_state(self, cs: ConfState) -> None:
        """Persist the membership (the shell does this with the applied index)."""
        self._conf_state = cs

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Persist ``entries``, discarding every stored entry from ``entries[0].index`` on."""
        if not entries:
            return
        first = self.first_index()
        ents = [e for e in entries if e.index >= first]
        if not ents:
            return
        offset = ents[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise LogUnavailable(
                f"append at {ents[0].index} leaves a gap after last index {self.last_index()}"
            )
        del self._ents[offset:]
        self._ents.extend(ents)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with ``snap`` (a follower installing a leader's snapshot)."""
        if snap.meta.index < self._snapshot.meta.index:
            raise SnapshotOutOfDate(
                f"snapshot at {snap.meta.index} is older than the stored one at "
                f"{self._snapshot.meta.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(snap.meta.index, snap.meta.term)]
        self._conf_state = snap.meta.conf_state

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a state-machine snapshot taken at applied ``index``."""
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDate(
                f"snapshot at {index} is not newer than {self._snapshot.meta.index}"
            )
        if index > self.last_index():
            raise LogUnavailable(f"snapshot at {index} is past the last index {self.last_index()}")
        snap = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Discard entries up to and including ``index`` (it must be covered by a snapshot)."""
        offset = self._ents[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise LogUnavailable(f"compact to {index} is past the last index {self.last_index()}")
        if index > self._snapshot.meta.index:
            raise LogUnavailable(
                f"compact to {index} would drop entries not covered by the snapshot at "
                f"{self._snapshot.meta.index}"
            )
        term = self._ents[index - offset].term
        self._ents = [Entry(index, term), *self._ents[index - offset + 1 :]]

    def copy(self) -> MemoryLogStorage:
        """An independent copy (what a crash-consistent disk image looks like)."""
        other = MemoryLogStorage()
        other._hard_state = self._hard_state
        other._snapshot = self._snapshot
        other._ents = list(self._ents)
        other._conf_state = self._conf_state
        return other


class GroupStateMachine(Protocol):
    """What a Raft group applies its committed entries to."""

    def applied_index(self) -> int:
        """The last index applied, as the state machine's reads see it (the host replays
        the log after the engine's on restart). A state machine writing through the
        host's write-back buffer reports what is staged there; the host writes the
        buffer out before it relies on the engine holding it (snapshots)."""
        ...

    def apply(self, entries: Sequence[Entry], batch: WriteBatch) -> list[Any]:
        """Apply ``entries`` in order, adding writes to ``batch``; one result per entry.

        Conf-change entries are passed too (their payload is Raft's); a state machine
        only records that their index is applied.
        """
        ...

    def snapshot(self) -> bytes:
        """Serialise the state machine as of its applied index.

        A state machine whose state lives in the engine may also offer
        ``snapshot_at(view: StorageSnapshot) -> bytes``: serialise from ``view`` (an
        engine read view the host opens when the engine holds exactly the applied
        state) reading nothing else, on a worker thread. The host then builds the
        snapshot off the event loop; without it, :meth:`snapshot` runs on the loop.
        """
        ...

    def restore(self, data: bytes, batch: WriteBatch) -> None:
        """Replace the state with a snapshot, adding the writes to ``batch``."""
        ...
