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
the read barrier; :class:`~atoll.coordination._router.RequestRouter`, compiled with the
native build) and a wait (here). A ``kv.multi`` frame starts all its requests first, then
waits for them together under one deadline, so a coalesced batch costs one task, one
timer and one reply frame instead of one each per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from atoll.core import KV_MULTI, MAP_REQUEST, Frame, LimitsConfig, decode_kv_multi
from atoll.core.rpc import settle, settle_all
from atoll.metadata import ClusterMap

from ._protocols import GroupHost, Pending, ReplicaGroup
from ._router import RequestRouter
from ._statemachine import KVStateMachine

__all__ = ["GroupHost", "KVService", "Pending", "ReplicaGroup"]


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
        self._limits = limits or LimitsConfig()
        self.request_timeout = request_timeout
        self.stats: dict[str, int] = {
            "requests": 0,
            "not_leader": 0,
            "stale_epoch": 0,
            "invalid": 0,
        }
        self._router = RequestRouter(
            node_id, host, state_machine, cluster_map, self._limits, self.stats
        )

    @property
    def limits(self) -> LimitsConfig:
        """The request limits this node enforces (key and value sizes)."""
        return self._limits

    @limits.setter
    def limits(self, value: LimitsConfig) -> None:
        self._limits = self._router.limits = value

    def handles(self, frame_type: str) -> bool:
        """Whether ``frame_type`` is a client request this service serves."""
        return frame_type == MAP_REQUEST or frame_type.startswith("kv.")

    async def handle(self, frame: Frame, sender: str) -> Frame:
        """Serve one client request frame; raises AtollError subclasses for error replies."""
        if frame.type == KV_MULTI:
            return await self._handle_multi(frame)
        started = self._router.start(frame)
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
        router = self._router
        out, waiting = router.start_all(decode_kv_multi(frame))
        if waiting:
            futures = [p.future for _, p, _ in waiting]
            timer = asyncio.get_running_loop().call_later(self.request_timeout, settle_all, futures)
            try:
                for fut in futures:
                    if not fut.done():
                        await fut
            finally:
                timer.cancel()
                for _, p, _ in waiting:
                    p.abandon()
        return router.finish_all(out, waiting, self.request_timeout)
