"""The client protocol: the frames a client and a node exchange for key-value requests.

Owns: frame type names and the builders/parsers of client requests and replies, shared by
``atoll.client`` (which sends them) and ``atoll.coordination`` (which serves them).
Never: routes, retries or applies anything.

Every request header carries the keyspace ``ks`` and the sender's cluster-map ``epoch``
(0 = unknown); a node whose map is newer answers :class:`StaleEpoch`, a node that is not
the partition's leader answers :class:`NotLeader` with a hint. Keys and values are
attachments. Writes carry the client's session (``c`` id, ``s`` seq, ``k`` acked floor).

``kv.multi`` carries several independent requests to one node in one frame (the client
coalesces the requests its tasks send to a node in the same event-loop iteration, as
TiKV's client batches commands): header ``q`` lists ``[op, header]`` per request and
``n`` its attachment count, the attachments follow in order. The reply ``kv.multi.ok``
lists ``[type, header]`` per request in ``r`` (type ``"error"`` with the error's wire
form for a request that failed) and ``n``, the same way. Each request succeeds or fails
on its own; only a malformed envelope fails the whole frame.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, ClassVar

from ._codec import Frame, _Value
from ._errors import AtollError, InvalidRequest, error_from_wire, error_to_wire

__all__ = [
    "KV_MULTI",
    "MAP_REQUEST",
    "Consistency",
    "KVOp",
    "KVRequest",
    "decode_kv_multi",
    "decode_kv_multi_reply",
    "decode_kv_request",
    "encode_kv_multi",
    "encode_kv_multi_reply",
    "encode_kv_request",
]

MAP_REQUEST = "meta.map"
"""Request the node's cluster map; the reply header has ``epoch``, attachment 0 the JSON."""

KV_MULTI = "kv.multi"
"""Several independent key-value requests in one frame (see the module docstring)."""


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


class KVRequest(_Value):
    """One client key-value request, decoded.

    ``partition`` is for batches: the partition all items belong to (the client groups
    them). A plain slotted class with value equality and ``repr`` (one per request;
    compiled with mypyc it is a native class): treat it as immutable.
    """

    __slots__ = (
        "acked",
        "client_id",
        "consistency",
        "epoch",
        "expected",
        "items",
        "key",
        "keyspace",
        "op",
        "partition",
        "seq",
        "value",
    )
    _FIELDS: ClassVar[tuple[str, ...]] = (
        "op",
        "keyspace",
        "epoch",
        "key",
        "value",
        "expected",
        "items",
        "consistency",
        "client_id",
        "seq",
        "acked",
        "partition",
    )

    def __init__(
        self,
        op: KVOp,
        keyspace: str,
        epoch: int,
        key: bytes = b"",
        value: bytes | None = None,
        expected: bytes | None = None,
        items: tuple[tuple[bytes, bytes | None], ...] = (),
        consistency: Consistency = Consistency.LINEARIZABLE,
        client_id: str = "",
        seq: int = 0,
        acked: int = 0,
        partition: int = -1,
    ) -> None:
        self.op = op
        self.keyspace = keyspace
        self.epoch = epoch
        self.key = key
        self.value = value
        self.expected = expected
        self.items = items
        self.consistency = consistency
        self.client_id = client_id
        self.seq = seq
        self.acked = acked
        self.partition = partition


_TYPES = {op: f"kv.{op.value}" for op in KVOp}


def encode_kv_request(req: KVRequest, *, epoch: int | None = None) -> Frame:
    """The frame for ``req`` (with ``epoch`` in place of ``req.epoch`` if given)."""
    e = req.epoch if epoch is None else epoch
    h: dict[str, Any]
    if req.client_id:
        h = {"ks": req.keyspace, "e": e, "c": req.client_id, "s": req.seq, "k": req.acked}
    else:
        h = {"ks": req.keyspace, "e": e}
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
    return Frame(_TYPES[req.op], h, atts)


def _field(h: dict[str, Any], name: str, typ: type, default: Any) -> Any:
    v = h.get(name, default)
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is int):
        raise InvalidRequest(f"request field {name!r} must be {typ.__name__}, not {v!r}")
    return v


_OPS = {f"kv.{op.value}": op for op in KVOp}
_ATTACHMENTS = {KVOp.GET: 1, KVOp.PUT: 2, KVOp.DELETE: 1, KVOp.CAS: 3}
_LINEARIZABLE = Consistency.LINEARIZABLE


def decode_kv_request(frame: Frame) -> KVRequest:
    """Parse a ``kv.*`` frame, validating every field; raises :class:`InvalidRequest`."""
    op = _OPS.get(frame.type)
    if op is None:
        if not frame.type.startswith("kv."):
            raise InvalidRequest(f"not a key-value request: {frame.type!r}")
        raise InvalidRequest(f"unknown key-value operation {frame.type!r}")
    h = frame.header
    a = frame.attachments
    ks = h.get("ks", "default")
    epoch = h.get("e", 0)
    client = h.get("c", "")
    seq = h.get("s", 0)
    acked = h.get("k", 0)
    # One cheap check for the usual case; _field names the first bad field otherwise.
    if not (
        type(ks) is str
        and type(epoch) is int
        and type(client) is str
        and type(seq) is int
        and type(acked) is int
    ):
        ks = _field(h, "ks", str, "default")
        epoch = _field(h, "e", int, 0)
        client = _field(h, "c", str, "")
        seq = _field(h, "s", int, 0)
        acked = _field(h, "k", int, 0)
    want = _ATTACHMENTS.get(op)
    if want is not None and len(a) != want:
        raise InvalidRequest(f"kv.{op.value} takes {want} attachments, got {len(a)}")
    if op is KVOp.PUT:
        return KVRequest(op, ks, epoch, a[0], a[1], None, (), _LINEARIZABLE, client, seq, acked)
    if op is KVOp.GET:
        cons = h.get("r")
        if cons is None or cons == "linearizable":
            consistency = _LINEARIZABLE
        else:
            try:
                consistency = Consistency(_field(h, "r", str, "linearizable"))
            except ValueError:
                raise InvalidRequest(
                    f"consistency {h.get('r')!r} is not one of: linearizable, stale"
                ) from None
        return KVRequest(op, ks, epoch, a[0], None, None, (), consistency, client, seq, acked)
    if op is KVOp.DELETE:
        return KVRequest(op, ks, epoch, a[0], None, None, (), _LINEARIZABLE, client, seq, acked)
    if op is KVOp.CAS:
        return KVRequest(
            op,
            ks,
            epoch,
            a[0],
            a[2] if h.get("n") else None,
            a[1] if h.get("x") else None,
            (),
            _LINEARIZABLE,
            client,
            seq,
            acked,
        )
    common = {"keyspace": ks, "epoch": epoch, "client_id": client, "seq": seq, "acked": acked}
    present = h.get("p")
    if not isinstance(present, list) or len(a) != 2 * len(present) or not present:
        raise InvalidRequest("kv.batch needs a non-empty item list matching its attachments")
    items = tuple((a[2 * i], a[2 * i + 1] if p else None) for i, p in enumerate(present))
    return KVRequest(op, items=items, partition=_field(h, "pt", int, -1), **common)


def encode_kv_multi(requests: Sequence[Frame]) -> Frame:
    """One ``kv.multi`` frame carrying ``requests`` (frames from :func:`encode_kv_request`)."""
    q: list[list[Any]] = []
    n: list[int] = []
    atts: list[bytes] = []
    for r in requests:
        q.append([r.type, r.header])
        n.append(len(r.attachments))
        atts += r.attachments
    return Frame(KV_MULTI, {"q": q, "n": n}, tuple(atts))


def _split(frame: Frame, key: str) -> list[tuple[str, Any, tuple[bytes, ...]]]:
    """The ``[type, header]`` items of ``frame.header[key]`` with their attachments."""
    items = frame.header.get(key)
    counts = frame.header.get("n")
    a = frame.attachments
    total: Any = None
    if isinstance(items, list) and isinstance(counts, list) and len(items) == len(counts):
        try:
            total = sum(counts)  # refuses non-numbers; a float makes the total a float
        except TypeError:
            total = None
    if (
        not isinstance(items, list)
        or not isinstance(counts, list)
        or type(total) is not int
        or total != len(a)
        or (counts and min(counts) < 0)
    ):
        raise InvalidRequest(f"{frame.type}: item list does not match its attachments")
    out = []
    at = 0
    for item, count in zip(items, counts, strict=True):
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], dict)
        ):
            raise InvalidRequest(f"{frame.type}: an item is not [type, header]: {item!r}")
        out.append((item[0], item[1], a[at : at + count]))
        at += count
    return out


def decode_kv_multi(frame: Frame) -> list[Frame]:
    """The requests inside a ``kv.multi`` frame; raises InvalidRequest if it is malformed
    (each request is decoded and validated on its own later)."""
    out = []
    for t, h, atts in _split(frame, "q"):
        if not t.startswith("kv.") or t == KV_MULTI:
            raise InvalidRequest(f"kv.multi may only carry single key-value requests, not {t!r}")
        out.append(Frame(t, h, atts))
    return out


def encode_kv_multi_reply(results: Sequence[Frame | AtollError]) -> Frame:
    """The ``kv.multi.ok`` reply: one reply frame or error per request, in order."""
    r: list[list[Any]] = []
    n: list[int] = []
    atts: list[bytes] = []
    for res in results:
        if isinstance(res, AtollError):
            r.append(["error", error_to_wire(res)])
            n.append(0)
        else:
            r.append([res.type, res.header])
            n.append(len(res.attachments))
            atts += res.attachments
    return Frame(KV_MULTI + ".ok", {"r": r, "n": n}, tuple(atts))


def decode_kv_multi_reply(frame: Frame, expected: int) -> list[Frame | AtollError]:
    """Each request's reply frame or error from a ``kv.multi.ok`` reply of ``expected``
    requests; raises InvalidRequest if the reply is malformed."""
    items = _split(frame, "r")
    if len(items) != expected:
        raise InvalidRequest(f"kv.multi reply has {len(items)} results for {expected} requests")
    return [error_from_wire(h) if t == "error" else Frame(t, h, atts) for t, h, atts in items]
