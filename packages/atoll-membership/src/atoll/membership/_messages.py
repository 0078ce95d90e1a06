"""SWIM wire messages: what they hold, how they become frames, how untrusted input is checked.

Owns: the three gossip updates (:class:`Alive`, :class:`Suspect`, :class:`Dead`), the
protocol messages that carry them (ping, ack, ping-req, nack, gossip, push-pull sync,
heartbeat digest), their compact :class:`atoll.core.Frame` encoding, size accounting,
and the validating decoder.
Never: does IO or holds protocol state. Decoding never trusts its input: anything
malformed, oversized or from another cluster raises :class:`MalformedGossip` (or
:class:`ForeignGossip`), which the shell turns into a log line and a counter.

Frame layout: type ``"swim.<kind>"``; header ``{"c": cluster, "s": sender, ...}``; an
update is a short JSON list, e.g. ``["s", node_id, incarnation, by]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import orjson

from atoll.core import Frame, FrameError, MemberInfo, MemberState

__all__ = [
    "Ack",
    "Alive",
    "Dead",
    "ForeignGossip",
    "Gossip",
    "Heartbeats",
    "MalformedGossip",
    "Message",
    "Nack",
    "Ping",
    "PingReq",
    "Suspect",
    "Sync",
    "Update",
    "decode_message",
    "encode_message",
    "wire_size",
]

MAX_ID_CHARS = 128
MAX_ADDRESS_CHARS = 256
MAX_LABEL_CHARS = 256
MAX_TAGS = 64
MAX_UPDATES = 512
MAX_SYNC_MEMBERS = 65536
MAX_INT = 2**53


class MalformedGossip(FrameError):
    """A gossip frame is not a valid SWIM message; the message names the field."""

    code = "bad_gossip"


class ForeignGossip(MalformedGossip):
    """A gossip frame from another cluster (or another protocol) reached this node."""

    code = "foreign_gossip"


def _member_wire(m: MemberInfo) -> list[Any]:
    return [m.node_id, m.incarnation, m.address, m.zone, m.rack, m.host, m.tags, m.version,
            m.meta_epoch]  # fmt: skip


@attrs.frozen(slots=True)
class Alive:
    """``member`` is alive at ``member.incarnation`` with this metadata (also: joins, updates)."""

    member: MemberInfo
    size: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "size", len(orjson.dumps(self.to_wire())))

    @property
    def node_id(self) -> str:
        """The member this update is about."""
        return self.member.node_id

    @property
    def incarnation(self) -> int:
        """The member's incarnation number."""
        return self.member.incarnation

    def to_wire(self) -> list[Any]:
        """The JSON list form."""
        return ["a", *_member_wire(self.member)]


@attrs.frozen(slots=True)
class Suspect:
    """``by`` suspects ``node_id`` at ``incarnation``."""

    node_id: str
    incarnation: int
    by: str
    size: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "size", len(orjson.dumps(self.to_wire())))

    def to_wire(self) -> list[Any]:
        """The JSON list form."""
        return ["s", self.node_id, self.incarnation, self.by]


@attrs.frozen(slots=True)
class Dead:
    """``by`` declares ``node_id`` dead at ``incarnation``; ``by == node_id`` means it left."""

    node_id: str
    incarnation: int
    by: str
    size: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "size", len(orjson.dumps(self.to_wire())))

    @property
    def is_leave(self) -> bool:
        """Whether the node announced its own departure."""
        return self.by == self.node_id

    def to_wire(self) -> list[Any]:
        """The JSON list form."""
        return ["d", self.node_id, self.incarnation, self.by]


Update = Alive | Suspect | Dead


@attrs.frozen(slots=True)
class Ping:
    """Direct probe. ``target`` guards against a different node now at the same address."""

    KIND: ClassVar[str] = "ping"
    sender: str
    reply_to: str
    seq: int
    target: str
    updates: tuple[Update, ...] = ()


@attrs.frozen(slots=True)
class Ack:
    """Answer to a ping (or an ack relayed by a helper for an indirect probe)."""

    KIND: ClassVar[str] = "ack"
    sender: str
    seq: int
    updates: tuple[Update, ...] = ()


@attrs.frozen(slots=True)
class PingReq:
    """Ask the receiver to probe ``target`` for us and relay the ack (and a nack if asked)."""

    KIND: ClassVar[str] = "pingreq"
    sender: str
    reply_to: str
    seq: int
    target: str
    target_address: str
    nack: bool
    updates: tuple[Update, ...] = ()


@attrs.frozen(slots=True)
class Nack:
    """Lifeguard: "I asked the target for you and heard nothing" — evidence we are healthy."""

    KIND: ClassVar[str] = "nack"
    sender: str
    seq: int
    updates: tuple[Update, ...] = ()


@attrs.frozen(slots=True)
class Gossip:
    """Updates only, pushed to a few random members each gossip interval."""

    KIND: ClassVar[str] = "gossip"
    sender: str
    updates: tuple[Update, ...] = ()


@attrs.frozen(slots=True)
class Sync:
    """Push-pull anti-entropy: the sender's whole member table. ``join``: first contact."""

    KIND: ClassVar[str] = "sync"
    sender: str
    reply_to: str
    members: tuple[MemberInfo, ...]
    join: bool = False
    reply: bool = False


@attrs.frozen(slots=True)
class Heartbeats:
    """Phi mode: the sender's view of every member's heartbeat counter, plus updates."""

    KIND: ClassVar[str] = "hb"
    sender: str
    reply_to: str
    beats: tuple[tuple[str, int], ...]
    updates: tuple[Update, ...] = ()
    reply: bool = False


Message = Ping | Ack | PingReq | Nack | Gossip | Sync | Heartbeats

_FRAME_OVERHEAD = 40  # length prefix, version, '{"t":"swim.",' '"h":{"c":..,"s":..}}'
_STATE_CODES = {
    MemberState.ALIVE: "a",
    MemberState.SUSPECT: "s",
    MemberState.DEAD: "d",
    MemberState.LEFT: "l",
}
_CODE_STATES = {v: k for k, v in _STATE_CODES.items()}


def wire_size(msg: Message, cluster: str = "") -> int:
    """Approximate encoded size in bytes (within a few percent), without encoding."""
    n = _FRAME_OVERHEAD + len(msg.KIND) + len(cluster) + len(msg.sender) + 12
    if isinstance(msg, Sync):
        return (
            n + len(msg.reply_to) + sum(len(orjson.dumps(_member_wire(m))) + 5 for m in msg.members)
        )
    if isinstance(msg, Heartbeats):
        n += len(msg.reply_to) + sum(len(i) + 10 for i, _ in msg.beats)
    elif isinstance(msg, Ping):
        n += len(msg.reply_to) + len(msg.target) + 20
    elif isinstance(msg, PingReq):
        n += len(msg.reply_to) + len(msg.target) + len(msg.target_address) + 40
    if msg.KIND != "sync":
        n += sum(u.size + 1 for u in msg.updates)
    return n


def encode_message(msg: Message, cluster: str) -> Frame:
    """Encode ``msg`` as a frame of type ``"swim.<kind>"`` for cluster ``cluster``."""
    h: dict[str, Any] = {"c": cluster, "s": msg.sender}
    if isinstance(msg, Ping):
        h.update(r=msg.reply_to, q=msg.seq, g=msg.target)
    elif isinstance(msg, (Ack, Nack)):
        h["q"] = msg.seq
    elif isinstance(msg, PingReq):
        h.update(r=msg.reply_to, q=msg.seq, g=msg.target, ga=msg.target_address, n=msg.nack)
    elif isinstance(msg, Sync):
        h.update(r=msg.reply_to, j=msg.join, p=msg.reply)
        h["m"] = [[*_member_wire(m), _STATE_CODES[m.state]] for m in msg.members]
    elif isinstance(msg, Heartbeats):
        h.update(r=msg.reply_to, b=[list(b) for b in msg.beats], p=msg.reply)
    if not isinstance(msg, Sync) and msg.updates:
        h["u"] = [u.to_wire() for u in msg.updates]
    return Frame("swim." + msg.KIND, h)


# --------------------------------------------------------------------------- decoding


def _bad(what: str) -> MalformedGossip:
    return MalformedGossip(f"malformed gossip: {what}")


def _str(v: Any, what: str, limit: int, *, empty: bool = True) -> str:
    if not isinstance(v, str) or len(v) > limit or (not empty and not v):
        raise _bad(f"{what} must be a string of at most {limit} characters, got {v!r:.80}")
    return v


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < MAX_INT:
        raise _bad(f"{what} must be a non-negative integer, got {v!r:.80}")
    return v


def _bool(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise _bad(f"{what} must be a boolean, got {v!r:.80}")
    return v


def _list(v: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(v, list) or len(v) > limit:
        raise _bad(f"{what} must be a list of at most {limit} items")
    return v


def _tags(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > MAX_TAGS:
        raise _bad(f"tags must be an object of at most {MAX_TAGS} entries")
    for k, val in v.items():
        _str(k, "tag name", MAX_LABEL_CHARS)
        _str(val, f"tag {k!r:.40}", MAX_LABEL_CHARS)
    return v


def _member(v: list[Any], state: MemberState) -> MemberInfo:
    return MemberInfo(
        node_id=_str(v[0], "node id", MAX_ID_CHARS, empty=False),
        incarnation=_int(v[1], "incarnation"),
        address=_str(v[2], "address", MAX_ADDRESS_CHARS, empty=False),
        zone=_str(v[3], "zone", MAX_LABEL_CHARS),
        rack=_str(v[4], "rack", MAX_LABEL_CHARS),
        host=_str(v[5], "host", MAX_LABEL_CHARS),
        tags=_tags(v[6]),
        version=_str(v[7], "version", MAX_LABEL_CHARS),
        meta_epoch=_int(v[8], "meta epoch"),
        state=state,
    )


def _update(v: Any) -> Update:
    if not isinstance(v, list) or not v:
        raise _bad("an update must be a non-empty list")
    kind = v[0]
    if kind == "a" and len(v) == 10:
        return Alive(_member(v[1:], MemberState.ALIVE))
    if kind in ("s", "d") and len(v) == 4:
        nid = _str(v[1], "node id", MAX_ID_CHARS, empty=False)
        inc = _int(v[2], "incarnation")
        by = _str(v[3], "suspector", MAX_ID_CHARS, empty=False)
        return Suspect(nid, inc, by) if kind == "s" else Dead(nid, inc, by)
    raise _bad(f"unknown update kind {kind!r:.20} with {len(v)} fields")


def _updates(h: dict[str, Any]) -> tuple[Update, ...]:
    return tuple(_update(u) for u in _list(h.get("u", []), "updates", MAX_UPDATES))


def decode_message(frame: Frame, cluster: str) -> Message:
    """Validate and decode a gossip frame; raise :class:`MalformedGossip` on any problem."""
    if not frame.type.startswith("swim."):
        raise ForeignGossip(f"frame type {frame.type!r:.40} is not a SWIM message")
    h = frame.header
    if h.get("c") != cluster:
        raise ForeignGossip(f"gossip for cluster {h.get('c')!r:.60}, this is {cluster!r}")
    sender = _str(h.get("s"), "sender", MAX_ID_CHARS, empty=False)
    kind = frame.type[5:]
    try:
        if kind == "ping":
            return Ping(
                sender,
                _str(h.get("r"), "reply address", MAX_ADDRESS_CHARS, empty=False),
                _int(h.get("q"), "seq"),
                _str(h.get("g"), "target", MAX_ID_CHARS, empty=False),
                _updates(h),
            )
        if kind == "ack":
            return Ack(sender, _int(h.get("q"), "seq"), _updates(h))
        if kind == "nack":
            return Nack(sender, _int(h.get("q"), "seq"), _updates(h))
        if kind == "pingreq":
            return PingReq(
                sender,
                _str(h.get("r"), "reply address", MAX_ADDRESS_CHARS, empty=False),
                _int(h.get("q"), "seq"),
                _str(h.get("g"), "target", MAX_ID_CHARS, empty=False),
                _str(h.get("ga"), "target address", MAX_ADDRESS_CHARS, empty=False),
                _bool(h.get("n"), "nack flag"),
                _updates(h),
            )
        if kind == "gossip":
            return Gossip(sender, _updates(h))
        if kind == "sync":
            members = []
            for m in _list(h.get("m"), "members", MAX_SYNC_MEMBERS):
                if not isinstance(m, list) or len(m) != 10 or m[9] not in _CODE_STATES:
                    raise _bad("a sync member must be a list of 10 fields ending in a state code")
                members.append(_member(m, _CODE_STATES[m[9]]))
            return Sync(
                sender,
                _str(h.get("r"), "reply address", MAX_ADDRESS_CHARS, empty=False),
                tuple(members),
                _bool(h.get("j"), "join flag"),
                _bool(h.get("p"), "reply flag"),
            )
        if kind == "hb":
            beats = []
            for b in _list(h.get("b"), "heartbeats", MAX_SYNC_MEMBERS):
                if not isinstance(b, list) or len(b) != 2:
                    raise _bad("a heartbeat must be [node id, counter]")
                beats.append((_str(b[0], "node id", MAX_ID_CHARS, empty=False), _int(b[1], "hb")))
            return Heartbeats(
                sender,
                _str(h.get("r"), "reply address", MAX_ADDRESS_CHARS, empty=False),
                tuple(beats),
                _updates(h),
                _bool(h.get("p", False), "reply flag"),
            )
    except (TypeError, ValueError, IndexError) as exc:
        raise _bad(f"{kind}: {exc}") from exc
    raise _bad(f"unknown SWIM message kind {kind!r:.40}")


def updates_size(updates: Sequence[Update]) -> int:
    """Bytes the updates add to a message."""
    return sum(u.size + 1 for u in updates)
