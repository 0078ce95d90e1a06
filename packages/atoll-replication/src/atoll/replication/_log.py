"""The Raft log as the core sees it: durable storage plus an unstable tail.

Owns: :class:`UnstableLog` (entries and an incoming snapshot not yet persisted) and
:class:`RaftLog` (commit and applied indexes, the append/conflict rules of
AppendEntries, fast conflict backtracking, commit-by-current-term, and slicing entries
to send or apply).
Never: writes storage; the shell persists the unstable part and calls ``stable_to``.
"""

from __future__ import annotations

from ._storage import LogCompacted, LogStorage, LogUnavailable
from ._types import Entry, Snapshot, limit_size

__all__ = ["RaftLog", "UnstableLog"]


class UnstableLog:
    """Entries (from ``offset`` on) and maybe a snapshot that are not durable yet.

    An entry at index ``i >= offset`` here overrides whatever storage holds at ``i``.
    """

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.entries: list[Entry] = []
        self.snapshot: Snapshot | None = None

    def maybe_first_index(self) -> int | None:
        """First index if an unstable snapshot sits below everything."""
        return self.snapshot.meta.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        """Last unstable index, if there is anything unstable."""
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, index: int) -> int | None:
        """Term of ``index`` if the unstable part knows it."""
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == index:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` were persisted, if ``index`` still has ``term``."""
        t = self.maybe_term(index)
        if t is None or t != term or index < self.offset:
            # Either already stable, or truncated and replaced while being persisted.
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        """The unstable snapshot at ``index`` was persisted."""
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        """Replace everything with ``snap``."""
        self.offset = snap.meta.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        """Append ``ents``, discarding anything from ``ents[0].index`` on."""
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replaces the whole unstable tail, and maybe part of storage.
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Unstable entries ``[lo, hi)``; the caller checks bounds."""
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """Storage + unstable tail, with the commit and applied indexes."""

    __slots__ = ("applied", "applying", "committed", "max_apply_bytes", "storage", "unstable")

    def __init__(self, storage: LogStorage, *, max_apply_bytes: int, applied: int = 0) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = UnstableLog(last + 1)
        self.committed = first - 1
        self.applied = max(first - 1, applied)
        self.applying = self.applied
        """Highest index handed to the application (applied once it says so)."""
        self.max_apply_bytes = max_apply_bytes

    # -- positions -------------------------------------------------------------------

    # first_index, last_index and term run a few dozen times per replicated entry, so
    # they inline the unstable log's checks (same rules as its maybe_* methods).

    def first_index(self) -> int:
        """First index still available (in an unstable snapshot or storage)."""
        snap = self.unstable.snapshot
        if snap is not None:
            return snap.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        """Last index of the log."""
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.meta.index
        return self.storage.last_index()

    def last_term(self) -> int:
        """Term of the last entry."""
        t = self.term(self.last_index())
        assert t is not None, "the last index always has a known term"
        return t

    def stable_last_index(self) -> int:
        """Last index that is durable (what a leader may count as its own match)."""
        if self.unstable.snapshot is not None:
            return 0  # only followers install snapshots; nothing of the new log is durable
        if self.unstable.entries:
            return self.unstable.offset - 1
        return self.last_index()

    def term(self, index: int) -> int | None:
        """Term of ``index``, or None if it is compacted or past the end."""
        u = self.unstable
        ents = u.entries
        if ents and u.offset <= index < u.offset + len(ents):
            return ents[index - u.offset].term  # unstable entries lie inside the log
        if index < self.first_index() - 1 or index > self.last_index():
            return None
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        try:
            return self.storage.term(index)
        except (LogCompacted, LogUnavailable):
            return None

    def match_term(self, index: int, term: int) -> bool:
        """Whether our entry at ``index`` has ``term``."""
        t = self.term(index)
        return t is not None and t == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft 5.4.1 for a log ending at (last_index, last_term) against ours."""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    # -- appending -------------------------------------------------------------------

    def append(self, ents: list[Entry]) -> int:
        """Append (leader side, or after a conflict check); returns the new last index."""
        if not ents:
            return self.last_index()
        if ents[0].index - 1 < self.committed:
            raise AssertionError(
                f"appending at {ents[0].index} would overwrite committed index {self.committed}"
            )
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """First index in ``ents`` whose term differs from ours (or that we lack); 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Fast backtracking: the largest ``i <= index`` whose term is ``<= term``.

        Any entry above it cannot match a leader entry of term ``term`` or lower, so the
        leader can skip all of them in one round trip. Returns ``(i, term(i))``.
        """
        i = index
        while i > 0:
            t = self.term(i)
            if t is None:
                # Compacted (or unknown): nothing below is known to conflict.
                return i, 0
            if t <= term:
                return i, t
            i -= 1
        return 0, 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """AppendEntries receiver rules: if our entry at ``index`` has ``log_term``,
        reconcile ``ents`` (truncating at the first conflict) and advance commit.

        Returns the last index now known to match the leader, or None on mismatch.
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise AssertionError(
                    f"entry {ci} conflicts with the committed log (commit {self.committed})"
                )
            self.append(list(ents[ci - index - 1 :]))
        self.commit_to(min(committed, last_new))
        return last_new

    # -- commit and apply ------------------------------------------------------------

    def commit_to(self, index: int) -> None:
        """Raise the commit index (never lowers it)."""
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} is past the last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to ``index`` only if it is an entry of the current ``term`` (Raft 5.4.2)."""
        if index > self.committed and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def has_next_committed(self) -> bool:
        """Whether committed entries wait to be handed to the application."""
        return self.committed > self.applying and self.unstable.snapshot is None

    def next_committed(self) -> list[Entry]:
        """The next batch of committed entries to apply (bounded by ``max_apply_bytes``)."""
        lo = max(self.applying + 1, self.first_index())
        hi = self.committed + 1
        if lo >= hi or self.unstable.snapshot is not None:
            return []
        return self.slice(lo, hi, self.max_apply_bytes)

    def applied_to(self, index: int) -> None:
        """The application applied everything up to ``index``."""
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, self.applied)

    # -- snapshots -------------------------------------------------------------------

    def restore(self, snap: Snapshot) -> None:
        """Replace the log with an incoming snapshot (commit jumps to its index)."""
        self.committed = snap.meta.index
        self.unstable.restore(snap)

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to (index, term) are durable."""
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        """The snapshot at ``index`` is durable."""
        self.unstable.stable_snap_to(index)

    # -- reading ---------------------------------------------------------------------

    def entries(self, lo: int, max_bytes: int | None) -> list[Entry] | None:
        """Entries from ``lo`` to the end, or None if ``lo`` is compacted."""
        if lo > self.last_index():
            return []
        if lo < self.first_index():
            return None
        try:
            return self.slice(lo, self.last_index() + 1, max_bytes)
        except LogCompacted:
            return None

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)`` from storage and/or the unstable tail."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise LogCompacted(f"index {lo} is compacted (first {self.first_index()})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"slice to {hi - 1} is past the last index {self.last_index()}")
        out: list[Entry] = []
        off = self.unstable.offset
        if lo < off:
            out = self.storage.entries(lo, min(hi, off), max_bytes)
            if len(out) < min(hi, off) - lo:
                return out  # size limit reached inside storage
        if hi > off:
            out = out + self.unstable.slice(max(lo, off), hi)
        return limit_size(out, max_bytes)
