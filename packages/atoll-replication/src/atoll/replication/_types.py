"""The Raft data model: log entries, hard state, membership, snapshots, messages, outputs.

Owns: the value classes the Raft core consumes and produces (frozen attrs classes,
and plain slotted ones for the three built on every message). Payloads stay
``bytes`` so a shell can ship them as frame attachments without copying or encoding.
Never: holds behaviour beyond trivial helpers, or does IO.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

import attrs

__all__ = [
    "EMPTY_SNAPSHOT_META",
    "ConfChange",
    "ConfChangeOp",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryKind",
    "HardState",
    "Message",
    "MessageType",
    "ProposalTicket",
    "ReadState",
    "Role",
    "RoleChange",
    "Snapshot",
    "SnapshotMeta",
    "limit_size",
]


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0
    """Application data (an empty one is a leader's no-op)."""
    CONF_CHANGE = 1
    """An encoded :class:`ConfChange`."""


# Entry, HardState and Message are built on every message and every Ready, so they are
# plain classes with ``__slots__`` and hand-written value methods, not attrs classes:
# compiled with mypyc (``_types`` is in the package's NATIVE_MODULES) they become native
# classes, whose construction and field reads from the compiled core are direct (an
# attrs ``__init__`` stays interpreted Python even in a compiled module: ~0.45 us for a
# Message, the largest part of decoding a follower's appends). They are treated as
# immutable values: nothing assigns to their fields after construction; ``replace``
# makes a changed copy. Equality, hashing and ``repr`` are by value, as attrs' were.


class _Value:
    """Value semantics for the plain classes below: equality (same class, equal
    ``_key()``), hashing and ``repr`` over ``_FIELDS``. A subclass on a hot path may
    override ``_key`` with a direct tuple.

    Each package that compiles such classes has its own copy of this base (atoll-core,
    atoll-coordination): a mypyc build covers one package, and a native class cannot
    inherit from another build's class.
    """

    __slots__ = ()
    _FIELDS: ClassVar[tuple[str, ...]] = ()

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Value)
        return self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Value)
        return self._key() != other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__name__}({body})"


class Entry(_Value):
    """One log entry: its position, the term it was created in, and its payload."""

    __slots__ = ("data", "index", "kind", "term")
    _FIELDS: ClassVar[tuple[str, ...]] = ("index", "term", "data", "kind")

    def __init__(
        self, index: int, term: int, data: bytes = b"", kind: EntryKind = EntryKind.NORMAL
    ) -> None:
        self.index = index
        self.term = term
        self.data = data
        self.kind = kind

    @property
    def size(self) -> int:
        """Approximate bytes this entry costs (payload plus a fixed overhead)."""
        return len(self.data) + 16


class HardState(_Value):
    """What must be durable before a node answers anyone: term, vote and commit index."""

    __slots__ = ("commit", "term", "vote")
    _FIELDS: ClassVar[tuple[str, ...]] = ("term", "vote", "commit")

    def __init__(self, term: int = 0, vote: str | None = None, commit: int = 0) -> None:
        self.term = term
        self.vote = vote
        self.commit = commit

    def _key(self) -> tuple[int, str | None, int]:
        # Direct: the core compares hard states on every Ready.
        return (self.term, self.vote, self.commit)


class ConfChangeType(enum.IntEnum):
    """One membership operation."""

    ADD_VOTER = 0
    ADD_LEARNER = 1
    """Add a non-voting member (or demote a voter to one)."""
    REMOVE_NODE = 2
    ADD_LEARNER_AUTO_PROMOTE = 3
    """Add a learner that the leader promotes to voter once it has caught up."""


@attrs.frozen(slots=True)
class ConfChangeOp:
    """One membership operation on one node."""

    type: ConfChangeType
    node_id: str


@attrs.frozen(slots=True)
class ConfChange:
    """A membership change. Changing more than one voter at once (or ``joint=True``)
    goes through joint consensus; ``leave_joint`` ends a joint configuration."""

    ops: tuple[ConfChangeOp, ...] = ()
    joint: bool = False
    """Use joint consensus even for a single-voter change."""
    leave_joint: bool = False


@attrs.frozen(slots=True)
class ConfState:
    """The membership of a group: voters (both halves while joint) and learners."""

    voters: frozenset[str] = frozenset()
    voters_outgoing: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()
    learners_next: frozenset[str] = frozenset()
    """Outgoing voters that become learners when the joint configuration is left."""
    auto_leave: bool = False
    """Whether the leader leaves the joint configuration by itself once it is applied."""
    auto_promote: frozenset[str] = frozenset()
    """Learners the leader promotes to voters once they have caught up."""

    @property
    def is_joint(self) -> bool:
        """Whether a joint configuration is in force."""
        return bool(self.voters_outgoing)

    @property
    def members(self) -> frozenset[str]:
        """Every node that receives the log."""
        return self.voters | self.voters_outgoing | self.learners | self.learners_next


@attrs.frozen(slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log and the membership at that point."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()


EMPTY_SNAPSHOT_META = SnapshotMeta()


@attrs.frozen(slots=True)
class Snapshot:
    """A state-machine snapshot: metadata plus the application's opaque bytes."""

    meta: SnapshotMeta = EMPTY_SNAPSHOT_META
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        """Whether this is the "no snapshot" placeholder (index 0)."""
        return self.meta.index == 0


class MessageType(enum.IntEnum):
    """Every Raft message kind on the wire."""

    APP = 1
    """AppendEntries (leader -> follower)."""
    APP_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAP = 9
    """One chunk of InstallSnapshot."""
    SNAP_RESP = 10
    """How many snapshot bytes the follower holds (the offset to resume from)."""
    TIMEOUT_NOW = 11
    """Leadership transfer: campaign now, skipping pre-vote and leader stickiness."""
    PROP = 12
    """A proposal forwarded by a follower to the leader."""
    READ_INDEX = 13
    """A follower asks the leader for a read index."""
    READ_INDEX_RESP = 14


class Message(_Value):
    """One Raft message. Fields a given ``type`` does not use keep their defaults.

    ``group_id`` lets a multi-group host route it; ``src``/``dst`` are node ids.
    ``context`` is opaque: a ReadIndex request id, or ``TRANSFER_CONTEXT`` on a forced
    vote. ``stamp`` is the leader-clock send time of a heartbeat, echoed back for lease
    bookkeeping.
    """

    __slots__ = (
        "commit",
        "context",
        "dst",
        "entries",
        "group_id",
        "index",
        "log_term",
        "reject",
        "reject_hint",
        "snap_data",
        "snap_done",
        "snap_offset",
        "snapshot",
        "src",
        "stamp",
        "term",
        "type",
    )
    _FIELDS: ClassVar[tuple[str, ...]] = (
        "type",
        "group_id",
        "src",
        "dst",
        "term",
        "log_term",
        "index",
        "commit",
        "entries",
        "reject",
        "reject_hint",
        "context",
        "stamp",
        "snapshot",
        "snap_offset",
        "snap_data",
        "snap_done",
    )

    def __init__(
        self,
        type: MessageType,
        group_id: int,
        src: str,
        dst: str,
        term: int = 0,
        log_term: int = 0,
        index: int = 0,
        commit: int = 0,
        entries: tuple[Entry, ...] = (),
        reject: bool = False,
        reject_hint: int = 0,
        context: bytes = b"",
        stamp: float = 0.0,
        snapshot: SnapshotMeta | None = None,
        snap_offset: int = 0,
        snap_data: bytes = b"",
        snap_done: bool = False,
    ) -> None:
        self.type = type
        self.group_id = group_id
        self.src = src
        self.dst = dst
        self.term = term
        self.log_term = log_term
        self.index = index
        self.commit = commit
        self.entries = entries
        self.reject = reject
        self.reject_hint = reject_hint
        self.context = context
        self.stamp = stamp
        self.snapshot = snapshot
        self.snap_offset = snap_offset
        self.snap_data = snap_data
        self.snap_done = snap_done

    def payload_bytes(self) -> int:
        """Bytes of payload carried (entries, context, snapshot chunk)."""
        return sum(len(e.data) for e in self.entries) + len(self.context) + len(self.snap_data)

    def replace(self, **changes: Any) -> Message:
        """A copy of this message with ``changes`` (field name -> value) applied."""
        fields: dict[str, Any] = {name: getattr(self, name) for name in self._FIELDS}
        for name in changes:
            if name not in fields:
                raise TypeError(f"Message has no field {name!r}")
        fields.update(changes)
        return Message(**fields)


@attrs.frozen(slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied ``index``."""

    index: int
    context: bytes


class Role(enum.Enum):
    """A Raft node's role."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@attrs.frozen(slots=True)
class RoleChange:
    """This node's role changed (an event in :class:`Ready`)."""

    group_id: int
    node_id: str
    role: Role
    term: int


@attrs.define(slots=True, unsafe_hash=True)
class ProposalTicket:
    """Where a proposal landed in the leader's log.

    The proposal succeeded iff the entry applied at ``index`` has term ``term``; any
    other term there means it was overwritten by a later leader and never applies.
    """

    index: int
    term: int


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_bytes`` (always at least one)."""
    if max_bytes is None or not entries:
        return entries
    total = 0
    for i, e in enumerate(entries):
        total += e.size
        if total > max_bytes and i > 0:
            return entries[:i]
    return entries
