"""The synchronous half of serving client requests: validate, route, start, reply.

Owns: :class:`RequestRouter`, which turns a decoded client request into either its
reply (answered at once) or a started operation (a proposal or a read barrier) and the
function that turns that operation's result into the reply; and the assembly of a
``kv.multi`` reply. :class:`atoll.coordination.KVService` does the waiting.
Never: awaits anything, or touches the Raft log: it proposes through a
:class:`ReplicaGroup` and reads the state machine.

Kept free of async code so it compiles with mypyc (``NATIVE_MODULES``): every client
request runs through it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from atoll.core import (
    MAP_REQUEST,
    AtollError,
    Consistency,
    Frame,
    InvalidRequest,
    KVOp,
    KVRequest,
    LimitsConfig,
    NotLeader,
    StaleEpoch,
    decode_kv_request,
    encode_kv_multi_reply,
)
from atoll.metadata import ClusterMap
from atoll.placement import partition_for_key

from ._commands import (
    CasCommand,
    Command,
    CommandResult,
    DeleteCommand,
    PutCommand,
    WriteBatchCommand,
    encode_command,
)
from ._protocols import Finish, GroupHost, Pending
from ._statemachine import KVStateMachine

__all__ = ["RequestRouter", "Started", "Waiting"]

log = logging.getLogger("atoll.coordination")

Started = Frame | tuple[Pending, Finish]
"""What starting a request gives: its reply, or the pending operation and its finisher."""
Waiting = list[tuple[int, Pending, Finish]]
"""The started operations of a ``kv.multi`` frame: (position in the reply, operation,
finisher)."""


class RequestRouter:
    """Validates and routes client requests on one node (see the module docstring).

    ``stats`` is the service's counter dict (``requests``, ``not_leader``,
    ``stale_epoch``, ``invalid``), updated in place.
    """

    def __init__(
        self,
        node_id: str,
        host: GroupHost,
        state_machine: KVStateMachine,
        cluster_map: Callable[[], ClusterMap],
        limits: LimitsConfig,
        stats: dict[str, int],
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.sm = state_machine
        self.cluster_map = cluster_map
        self.limits = limits
        self.stats = stats

    def start(self, frame: Frame) -> Started:
        """Start serving ``frame``: its reply if it is answered at once, else the pending
        operation and how to turn its result into the reply. Raises AtollError."""
        stats = self.stats
        stats["requests"] += 1
        cmap = self.cluster_map()
        if frame.type == MAP_REQUEST:
            return Frame("meta.map.ok", {"epoch": cmap.epoch}, (cmap.to_json(),))
        try:
            req = decode_kv_request(frame)
            self._validate(req)
        except InvalidRequest:
            stats["invalid"] += 1
            raise
        if req.epoch and req.epoch < cmap.epoch:
            stats["stale_epoch"] += 1
            raise StaleEpoch(epoch=cmap.epoch)
        ks = cmap.keyspaces.get(req.keyspace)
        if ks is None:
            raise InvalidRequest(f"keyspace {req.keyspace!r} does not exist")
        op = req.op
        if op is KVOp.BATCH:
            part = req.partition
            if not 0 <= part < ks.partitions or any(
                partition_for_key(k, ks.partitions) != part for k, _ in req.items
            ):
                raise InvalidRequest("kv.batch items must all belong to the partition it names")
        else:
            part = partition_for_key(req.key, ks.partitions)
        gid: int = ks.group_of(part)
        group = self.host.group(gid)
        if group is None:
            rs = cmap.groups.get(gid)
            raise NotLeader(
                f"node {self.node_id} hosts no replica of partition {part}",
                leader_hint=rs.replicas[0] if rs else None,
            )
        sm = self.sm
        key = req.key
        if op is KVOp.GET and req.consistency is Consistency.STALE:
            return _value_reply(sm.get(gid, key))
        if not group.is_leader:
            stats["not_leader"] += 1
            # A client came here because it could not reach the leader it knew: if the
            # group sleeps, its election timer must run again in case that leader is gone.
            group.wake()
            raise NotLeader(
                f"node {self.node_id} does not lead group {gid}", leader_hint=group.leader_id
            )
        if op is KVOp.GET:
            barrier = group.start_read()
            if barrier is None:
                return _value_reply(sm.get(gid, key))
            return barrier, lambda _: _value_reply(sm.get(gid, key))
        pending = group.start_proposal(encode_command(_command(req)))
        return pending, lambda result: _write_reply(req, result)

    def start_all(self, subs: list[Frame]) -> tuple[list[Frame | AtollError | None], Waiting]:
        """Start every request of a ``kv.multi`` frame: the reply list so far (None where
        an operation is pending) and the pending operations."""
        out: list[Frame | AtollError | None] = []
        waiting: Waiting = []
        for sub in subs:
            try:
                started = self.start(sub)
            except AtollError as exc:
                out.append(exc)
                continue
            except Exception as exc:
                log.exception("request %r in a kv.multi failed", sub.type)
                out.append(AtollError(f"internal error handling {sub.type!r} ({exc!r})"))
                continue
            if isinstance(started, Frame):
                out.append(started)
            else:
                pending, finish = started
                waiting.append((len(out), pending, finish))
                out.append(None)
        return out, waiting

    def finish_all(
        self, out: list[Frame | AtollError | None], waiting: Waiting, timeout: float
    ) -> Frame:
        """The ``kv.multi.ok`` reply once the pending operations ended or the deadline
        (``timeout`` seconds) passed."""
        for i, p, finish in waiting:
            if not p.done:
                out[i] = p.timeout_error(timeout)
                continue
            err = p.error
            if err is not None:
                out[i] = (
                    err if isinstance(err, AtollError) else AtollError(f"request failed: {err!r}")
                )
                continue
            try:
                out[i] = finish(p.result)
            except AtollError as exc:
                out[i] = exc
        return encode_kv_multi_reply([r for r in out if r is not None])

    def _validate(self, req: KVRequest) -> None:
        lim = self.limits
        if (  # the usual case, inline
            req.op is not KVOp.BATCH
            and req.expected is None
            and req.key
            and len(req.key) <= lim.max_key_bytes
            and (req.value is None or len(req.value) <= lim.max_value_bytes)
        ):
            return
        keys = [k for k, _ in req.items] if req.op is KVOp.BATCH else [req.key]
        values = [v for _, v in req.items] if req.op is KVOp.BATCH else [req.value, req.expected]
        for k in keys:
            if not k:
                raise InvalidRequest("key must not be empty")
            if len(k) > lim.max_key_bytes:
                raise InvalidRequest(
                    f"key of {len(k)} bytes exceeds the limit of {lim.max_key_bytes} bytes"
                )
        for v in values:
            if v is not None and len(v) > lim.max_value_bytes:
                raise InvalidRequest(
                    f"value of {len(v)} bytes exceeds the limit of {lim.max_value_bytes} bytes"
                )


def _command(req: KVRequest) -> Command:
    s = (req.client_id, req.seq, req.acked)
    if req.op is KVOp.PUT:
        return PutCommand(req.key, req.value or b"", *s)
    if req.op is KVOp.DELETE:
        return DeleteCommand(req.key, *s)
    if req.op is KVOp.CAS:
        return CasCommand(req.key, req.expected, req.value, *s)
    return WriteBatchCommand(req.items, *s)


def _value_reply(value: bytes | None) -> Frame:
    if value is None:
        return Frame("kv.value", {"f": False})
    return Frame("kv.value", {"f": True}, (value,))


def _write_reply(req: KVRequest, res: Any) -> Frame:
    if not isinstance(res, CommandResult):
        raise InvalidRequest(f"command was rejected: {res!r}")
    h: dict[str, Any] = {"ok": res.ok, "x": res.existed, "d": res.duplicate}
    if res.previous is not None:
        h["p"] = True
        return Frame(f"kv.{req.op.value}.ok", h, (res.previous,))
    return Frame(f"kv.{req.op.value}.ok", h)
