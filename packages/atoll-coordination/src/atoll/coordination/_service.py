"""The client-facing request router: serves ``kv.*`` and ``meta.map`` frames on a node.

Owns: validation of client requests against the node's limits, routing a key to its
partition's Raft group, leader checks (``NotLeader`` with a hint), epoch checks
(``StaleEpoch``), linearizable reads (a read barrier from Raft: ReadIndex or lease),
stale reads, and turning command results into reply frames.
Never: decides commits or touches the Raft log: it proposes through a
:class:`ReplicaGroup` and reads the state machine.

Write path (DESIGN.md section 6): decode -> validate -> partition = hash(key) ->
group; not the leader -> NotLeader(hint); leader -> propose the encoded command (the
Raft host batches every proposal of a tick into one append + one fsync) -> the reply is
sent once the entry is committed on a quorum and applied.

Every request runs in two phases: a synchronous start (validate, route, propose or start
the read barrier) and a wait. A ``kv.multi`` frame starts all its requests first, then
waits for them together under one deadline, so a coalesced batch costs one task, one
timer and one reply frame instead of one each per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from atoll.core import (
    KV_MULTI,
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
    Timeout,
    decode_kv_multi,
    decode_kv_request,
    encode_kv_multi_reply,
)
from atoll.core.rpc import settle, settle_all
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
from ._statemachine import KVStateMachine

__all__ = ["GroupHost", "KVService", "Pending", "ReplicaGroup"]

log = logging.getLogger("atoll.coordination")


class Pending(Protocol):
    """A started proposal or read barrier: ``future`` completes when ``done`` is set and
    ``result`` or ``error`` holds the outcome."""

    future: asyncio.Future[None]
    done: bool
    result: Any
    error: Exception | None

    def abandon(self) -> None:
        """Withdraw the operation (its caller stopped waiting)."""
        ...

    def timeout_error(self, timeout: float) -> Timeout:
        """The error for a caller that waited ``timeout`` seconds in vain."""
        ...


_Finish = Callable[[Any], Frame]
"""Turns a completed operation's result into its reply frame."""


class ReplicaGroup(Protocol):
    """The Raft group of one partition, as the router needs it."""

    @property
    def group_id(self) -> int:
        """The group id."""
        ...

    @property
    def is_leader(self) -> bool:
        """Whether this node currently leads the group."""
        ...

    @property
    def leader_id(self) -> str | None:
        """The leader this node knows of, if any."""
        ...

    def start_proposal(self, data: bytes) -> Pending:
        """Replicate ``data``; the result is the state machine's once applied here.
        Raises NotLeader (or the host's degradation error) at once."""
        ...

    def start_read(self) -> Pending | None:
        """Start a linearizable read barrier; None if the local state may be read now."""
        ...

    def wake(self) -> None:
        """Wake the group if it sleeps (quiescence), so a lost leader gets replaced."""
        ...


class GroupHost(Protocol):
    """Finds the replica groups hosted on this node."""

    def group(self, group_id: int) -> ReplicaGroup | None:
        """The local replica of ``group_id``, or None if this node hosts none."""
        ...


class KVService:
    """Serves client requests on one node."""

    def __init__(
        self,
        node_id: str,
        host: GroupHost,
        state_machine: KVStateMachine,
        cluster_map: Callable[[], ClusterMap],
        *,
        limits: LimitsConfig | None = None,
        request_timeout: float = 5.0,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.sm = state_machine
        self.cluster_map = cluster_map
        self.limits = limits or LimitsConfig()
        self.request_timeout = request_timeout
        self.stats: dict[str, int] = {
            "requests": 0,
            "not_leader": 0,
            "stale_epoch": 0,
            "invalid": 0,
        }

    def handles(self, frame_type: str) -> bool:
        """Whether ``frame_type`` is a client request this service serves."""
        return frame_type == MAP_REQUEST or frame_type.startswith("kv.")

    async def handle(self, frame: Frame, sender: str) -> Frame:
        """Serve one client request frame; raises AtollError subclasses for error replies."""
        if frame.type == KV_MULTI:
            return await self._handle_multi(frame)
        started = self._start(frame)
        if isinstance(started, Frame):
            return started
        pending, finish = started
        if not pending.done:
            timer = asyncio.get_running_loop().call_later(
                self.request_timeout, settle, pending.future
            )
            try:
                await pending.future
            finally:
                timer.cancel()
                pending.abandon()
            if not pending.done:
                raise pending.timeout_error(self.request_timeout)
        if pending.error is not None:
            raise pending.error
        return finish(pending.result)

    async def _handle_multi(self, frame: Frame) -> Frame:
        """Serve a ``kv.multi`` frame: start every request, then wait for all together
        under one deadline; each request gets its own reply or error."""
        subs = decode_kv_multi(frame)
        out: list[Frame | AtollError | None] = []
        waiting: list[tuple[int, Pending, _Finish]] = []
        for sub in subs:
            try:
                started = self._start(sub)
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
                waiting.append((len(out), *started))
                out.append(None)
        if waiting:
            loop = asyncio.get_running_loop()
            futures = [p.future for _, p, _ in waiting]
            timer = loop.call_later(self.request_timeout, settle_all, futures)
            try:
                for fut in futures:
                    if not fut.done():
                        await fut
            finally:
                timer.cancel()
                for _, p, _ in waiting:
                    p.abandon()
            for i, p, finish in waiting:
                if not p.done:
                    out[i] = p.timeout_error(self.request_timeout)
                    continue
                if p.error is not None:
                    out[i] = (
                        p.error
                        if isinstance(p.error, AtollError)
                        else AtollError(f"request failed: {p.error!r}")
                    )
                    continue
                try:
                    out[i] = finish(p.result)
                except AtollError as exc:
                    out[i] = exc
        return encode_kv_multi_reply([r for r in out if r is not None])

    def _start(self, frame: Frame) -> Frame | tuple[Pending, _Finish]:
        """Start serving ``frame``: its reply if it is answered at once, else the pending
        operation and how to turn its result into the reply. Raises AtollError."""
        self.stats["requests"] += 1
        cmap = self.cluster_map()
        if frame.type == MAP_REQUEST:
            return Frame("meta.map.ok", {"epoch": cmap.epoch}, (cmap.to_json(),))
        try:
            req = decode_kv_request(frame)
            self._validate(req)
        except InvalidRequest:
            self.stats["invalid"] += 1
            raise
        if req.epoch and req.epoch < cmap.epoch:
            self.stats["stale_epoch"] += 1
            raise StaleEpoch(epoch=cmap.epoch)
        ks = cmap.keyspaces.get(req.keyspace)
        if ks is None:
            raise InvalidRequest(f"keyspace {req.keyspace!r} does not exist")
        if req.op is KVOp.BATCH:
            part = req.partition
            if not 0 <= part < ks.partitions or any(
                partition_for_key(k, ks.partitions) != part for k, _ in req.items
            ):
                raise InvalidRequest("kv.batch items must all belong to the partition it names")
        else:
            part = partition_for_key(req.key, ks.partitions)
        gid = ks.group_of(part)
        group = self.host.group(gid)
        if group is None:
            rs = cmap.groups.get(gid)
            raise NotLeader(
                f"node {self.node_id} hosts no replica of partition {part}",
                leader_hint=rs.replicas[0] if rs else None,
            )
        if req.op is KVOp.GET and req.consistency is Consistency.STALE:
            return self._value_reply(self.sm.get(gid, req.key))
        if not group.is_leader:
            self.stats["not_leader"] += 1
            # A client came here because it could not reach the leader it knew: if the
            # group sleeps, its election timer must run again in case that leader is gone.
            group.wake()
            raise NotLeader(
                f"node {self.node_id} does not lead group {gid}", leader_hint=group.leader_id
            )
        if req.op is KVOp.GET:
            barrier = group.start_read()
            if barrier is None:
                return self._value_reply(self.sm.get(gid, req.key))
            return barrier, lambda _: self._value_reply(self.sm.get(gid, req.key))
        pending = group.start_proposal(encode_command(self._command(req)))
        return pending, lambda result: self._write_reply(req, result)

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

    @staticmethod
    def _command(req: KVRequest) -> Command:
        s = (req.client_id, req.seq, req.acked)
        if req.op is KVOp.PUT:
            return PutCommand(req.key, req.value or b"", *s)
        if req.op is KVOp.DELETE:
            return DeleteCommand(req.key, *s)
        if req.op is KVOp.CAS:
            return CasCommand(req.key, req.expected, req.value, *s)
        return WriteBatchCommand(req.items, *s)

    @staticmethod
    def _value_reply(value: bytes | None) -> Frame:
        if value is None:
            return Frame("kv.value", {"f": False})
        return Frame("kv.value", {"f": True}, (value,))

    @staticmethod
    def _write_reply(req: KVRequest, res: object) -> Frame:
        if not isinstance(res, CommandResult):
            raise InvalidRequest(f"command was rejected: {res!r}")
        h: dict[str, Any] = {"ok": res.ok, "x": res.existed, "d": res.duplicate}
        if res.previous is not None:
            h["p"] = True
            return Frame(f"kv.{req.op.value}.ok", h, (res.previous,))
        return Frame(f"kv.{req.op.value}.ok", h)
