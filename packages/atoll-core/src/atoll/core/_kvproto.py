"""The client protocol: the frames a client and a node exchange for key-value requests.

Owns: frame type names and the builders/parsers of client requests and replies, shared by
``atoll.client`` (which sends them) and ``atoll.coordination`` (which serves them).
Never: routes, retries or applies anything.

Every request header carries the keyspace ``ks`` and the sender's cluster-map ``epoch``
(0 = unknown); a node whose map is newer answers :class:`StaleEpoch`, a node that is not
the partition's leader answers :class:`NotLeader` with a hint. Keys and values are
attachments. Writes carry the client's session (``c`` id, ``s`` seq, ``k`` acked floor).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from ._codec import Frame
from ._errors import InvalidRequest

__all__ = [
    "MAP_REQUEST",
    "Consistency",
    "KVOp",
    "KVRequest",
    "decode_kv_request",
    "encode_kv_request",
]

MAP_REQUEST = "meta.map"
"""Request the node's cluster map; the reply header has ``epoch``, attachment 0 the JSON."""


class Consistency(enum.StrEnum):
    """Read consistency a client asks for."""

    LINEARIZABLE = "linearizable"
    """Reflects every write acknowledged before the read began (ReadIndex or lease)."""
    STALE = "stale"
    """Any replica's applied state; may lag. Cheap."""


class KVOp(enum.StrEnum):
    """Key-value operations (the frame type is ``kv.<op>``)."""

    GET = "get"
    PUT = "put"
    DELETE = "delete"
    CAS = "cas"
    BATCH = "batch"


@attrs.frozen(slots=True)
class KVRequest:
    """One client key-value request, decoded."""

    op: KVOp
    keyspace: str
    epoch: int
    key: bytes = b""
    value: bytes | None = None
    expected: bytes | None = None
    items: tuple[tuple[bytes, bytes | None], ...] = ()
    consistency: Consistency = Consistency.LINEARIZABLE
    client_id: str = ""
    seq: int = 0
    acked: int = 0
    partition: int = -1
    """For batches: the partition all items belong to (the client groups them)."""


def encode_kv_request(req: KVRequest, *, epoch: int | None = None) -> Frame:
    """The frame for ``req`` (with ``epoch`` in place of ``req.epoch`` if given)."""
    h: dict[str, Any] = {"ks": req.keyspace, "e": req.epoch if epoch is None else epoch}
    if req.client_id:
        h.update(c=req.client_id, s=req.seq, k=req.acked)
    if req.op is KVOp.GET:
        h["r"] = req.consistency.value
        atts: tuple[bytes, ...] = (req.key,)
    elif req.op is KVOp.PUT:
        atts = (req.key, req.value or b"")
    elif req.op is KVOp.DELETE:
        atts = (req.key,)
    elif req.op is KVOp.CAS:
        h["x"] = req.expected is not None
        h["n"] = req.value is not None
        atts = (req.key, req.expected or b"", req.value or b"")
    else:
        h["p"] = [0 if v is None else 1 for _, v in req.items]
        h["pt"] = req.partition
        flat: list[bytes] = []
        for k, v in req.items:
            flat += (k, v or b"")
        atts = tuple(flat)
    return Frame(f"kv.{req.op.value}", h, atts)


def _field(h: dict[str, Any], name: str, typ: type, default: Any) -> Any:
    v = h.get(name, default)
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is int):
        raise InvalidRequest(f"request field {name!r} must be {typ.__name__}, not {v!r}")
    return v


def decode_kv_request(frame: Frame) -> KVRequest:
    """Parse a ``kv.*`` frame, validating every field; raises :class:`InvalidRequest`."""
    if not frame.type.startswith("kv."):
        raise InvalidRequest(f"not a key-value request: {frame.type!r}")
    try:
        op = KVOp(frame.type[3:])
    except ValueError:
        raise InvalidRequest(f"unknown key-value operation {frame.type!r}") from None
    h = frame.header
    a = frame.attachments
    ks = _field(h, "ks", str, "default")
    epoch = _field(h, "e", int, 0)
    client = _field(h, "c", str, "")
    seq = _field(h, "s", int, 0)
    acked = _field(h, "k", int, 0)
    common = {"keyspace": ks, "epoch": epoch, "client_id": client, "seq": seq, "acked": acked}
    want = {KVOp.GET: 1, KVOp.PUT: 2, KVOp.DELETE: 1, KVOp.CAS: 3}
    if op in want and len(a) != want[op]:
        raise InvalidRequest(f"kv.{op.value} takes {want[op]} attachments, got {len(a)}")
    if op is KVOp.GET:
        try:
            cons = Consistency(_field(h, "r", str, "linearizable"))
        except ValueError:
            raise InvalidRequest(
                f"consistency {h.get('r')!r} is not one of: linearizable, stale"
            ) from None
        return KVRequest(op, key=a[0], consistency=cons, **common)
    if op is KVOp.PUT:
        return KVRequest(op, key=a[0], value=a[1], **common)
    if op is KVOp.DELETE:
        return KVRequest(op, key=a[0], **common)
    if op is KVOp.CAS:
        return KVRequest(
            op,
            key=a[0],
            expected=a[1] if h.get("x") else None,
            value=a[2] if h.get("n") else None,
            **common,
        )
    present = h.get("p")
    if not isinstance(present, list) or len(a) != 2 * len(present) or not present:
        raise InvalidRequest("kv.batch needs a non-empty item list matching its attachments")
    items = tuple((a[2 * i], a[2 * i + 1] if p else None) for i, p in enumerate(present))
    return KVRequest(op, items=items, partition=_field(h, "pt", int, -1), **common)
