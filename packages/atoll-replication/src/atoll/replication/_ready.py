"""The output batch of the Raft core.

Owns: :class:`Ready` (what the shell must persist, send and apply before ``advance``).
:class:`RaftConfig` lives in ``_config`` and is re-exported here.
Never: does IO; a ``Ready`` is data, the shell acts on it.
"""

from __future__ import annotations

from typing import ClassVar

from atoll.core import LeaderChange

from ._config import RaftConfig
from ._types import (
    ConfState,
    Entry,
    HardState,
    Message,
    ReadState,
    RoleChange,
    Snapshot,
    _Value,
)

__all__ = ["RaftConfig", "Ready", "ReadyEvent"]

ReadyEvent = LeaderChange | RoleChange
"""What ``Ready.events`` holds."""


class Ready(_Value):
    """One batch of work for the shell. Handle it in this order, then call ``advance``:

    1. Persist, atomically and durably: ``snapshot`` (if any), then ``entries`` (first
       discarding every stored entry with index >= ``entries[0].index``), then
       ``hard_state`` (if not None).
    2. Send ``messages`` — these may also be sent *before* step 1 finishes (they are
       the leader's own appends and heartbeats). Send ``messages_after_persist`` only
       once step 1 is durable: they promise votes and acknowledge entries.
    3. Apply ``committed_entries`` to the state machine, in order; persist
       ``conf_state`` (if not None) with the applied index.
    4. Serve ``read_states`` once the applied index reaches each one's ``index``.
    5. Call ``RaftNode.advance(ready)``.

    ``conf_state`` is the membership after ``committed_entries`` (or ``snapshot``), if it
    changed. ``snapshot_request``: take a state-machine snapshot at this applied index,
    then compact the log up to ``RaftNode.compaction_floor()`` at most.

    A plain slotted class (built once per group per cycle, by the compiled core) with
    value equality, as the attrs class had; treat it as immutable.
    """

    __slots__ = (
        "committed_entries",
        "conf_state",
        "entries",
        "events",
        "hard_state",
        "messages",
        "messages_after_persist",
        "read_states",
        "snapshot",
        "snapshot_request",
    )
    _FIELDS: ClassVar[tuple[str, ...]] = (
        "hard_state",
        "entries",
        "snapshot",
        "messages",
        "messages_after_persist",
        "committed_entries",
        "read_states",
        "conf_state",
        "events",
        "snapshot_request",
    )

    def __init__(
        self,
        hard_state: HardState | None = None,
        entries: tuple[Entry, ...] = (),
        snapshot: Snapshot | None = None,
        messages: tuple[Message, ...] = (),
        messages_after_persist: tuple[Message, ...] = (),
        committed_entries: tuple[Entry, ...] = (),
        read_states: tuple[ReadState, ...] = (),
        conf_state: ConfState | None = None,
        events: tuple[ReadyEvent, ...] = (),
        snapshot_request: int | None = None,
    ) -> None:
        self.hard_state = hard_state
        self.entries = entries
        self.snapshot = snapshot
        self.messages = messages
        self.messages_after_persist = messages_after_persist
        self.committed_entries = committed_entries
        self.read_states = read_states
        self.conf_state = conf_state
        self.events = events
        self.snapshot_request = snapshot_request

    @property
    def truncate_from(self) -> int | None:
        """Stored entries at or above this index must be discarded before appending."""
        return self.entries[0].index if self.entries else None

    @property
    def must_sync(self) -> bool:
        """Whether step 1 needs an fsync (entries, a snapshot, or a new term/vote)."""
        return bool(self.entries) or self.snapshot is not None or self.hard_state is not None

    @property
    def is_empty(self) -> bool:
        """Whether there is nothing to do."""
        return not (
            self.hard_state
            or self.entries
            or self.snapshot
            or self.messages
            or self.messages_after_persist
            or self.committed_entries
            or self.read_states
            or self.conf_state
            or self.events
            or self.snapshot_request is not None
        )
