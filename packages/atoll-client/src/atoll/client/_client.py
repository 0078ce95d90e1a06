"""The Atoll client: routes each request to its partition's leader, retries safely.

Owns: the cached cluster map, the per-partition leader cache, request routing, retry with
backoff, client-side validation, and the session (client id, seq, acked floor) that makes a
retried write apply exactly once.
Never: talks to storage or Raft directly; everything goes through the client protocol
(:mod:`atoll.core` ``kv.*`` frames) over a :class:`atoll.core.Transport`.

Retry rules (what an etcd or TiKV client does):

* ``NotLeader(hint)``: remember the hint as the partition's leader and retry at once.
* ``StaleEpoch``: refresh the cluster map, then retry.
* unreachable node, transport error, per-attempt timeout, ``Unavailable``: try the next
  replica after an exponential backoff with jitter.
* ``InvalidRequest`` and other non-retryable errors: raised to the caller at once.

A write that times out overall raises :class:`Timeout`: its outcome is unknown (it may
still apply, exactly once). Reads and writes never retry past the request's deadline.

Requests that tasks send to the same node in the same event-loop iteration travel in one
``kv.multi`` frame (:class:`RequestCoalescer`); each still succeeds, fails and retries
on its own. ``coalesce=False`` sends one frame per request.
"""

from __future__ import annotations

import heapq
import logging
import random
import time
import uuid
from collections.abc import Mapping, Sequence

import anyio
import pluggy

from atoll.core import (
    MAP_REQUEST,
    AtollError,
    Consistency,
    Frame,
    InvalidRequest,
    KVOp,
    KVRequest,
    NotLeader,
    StaleEpoch,
    Timeout,
    Transport,
    TransportConfig,
    Unavailable,
    encode_kv_request,
    make_plugin_manager,
    make_transport,
)
from atoll.metadata import ClusterMap, KeyspaceRecord
from atoll.placement import partition_for_key

from ._coalesce import RequestCoalescer

__all__ = ["AtollClient", "CasResult"]

log = logging.getLogger("atoll.client")


class CasResult:
    """Outcome of a compare-and-set: whether it swapped, and the value seen before."""

    __slots__ = ("previous", "succeeded")

    def __init__(self, succeeded: bool, previous: bytes | None) -> None:
        self.succeeded = succeeded
        self.previous = previous

    def __bool__(self) -> bool:
        return self.succeeded

    def __repr__(self) -> str:
        return f"CasResult(succeeded={self.succeeded}, previous={self.previous!r})"


class AtollClient:
    """An async client for an Atoll cluster (use ``async with``).

    :param endpoints: ``host:port`` of any nodes; one live node is enough to learn the rest.
    :param keyspace: the keyspace requests go to unless they name another.
    :param timeout: the default overall deadline of one request, seconds.
    :param transport: a ready :class:`Transport` to use (tests); by default one is made
        from the installed plugins (``transport_backend``) in client-only mode.
    :param max_key_bytes: / ``max_value_bytes``: client-side limits checked before sending.
    :param coalesce: send the requests of concurrent tasks to one node together in
        ``kv.multi`` frames (default); False sends one frame per request.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        keyspace: str = "default",
        timeout: float = 5.0,
        attempt_timeout: float = 1.0,
        transport: Transport | None = None,
        transport_backend: str = "tcp",
        transport_config: TransportConfig | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
        client_id: str | None = None,
        max_key_bytes: int = 4096,
        max_value_bytes: int = 1024 * 1024,
        rng: random.Random | None = None,
        coalesce: bool = True,
    ) -> None:
        if not endpoints:
            raise InvalidRequest("AtollClient needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.keyspace = keyspace
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.client_id = client_id or uuid.uuid4().hex
        self.max_key_bytes = max_key_bytes
        self.max_value_bytes = max_value_bytes
        self._transport = transport
        self._own_transport = transport is None
        self._tconfig = transport_config or TransportConfig(backend=transport_backend)
        self._pm = plugin_manager
        self._rng = rng or random.Random()
        self._map: ClusterMap | None = None
        self._map_lock = anyio.Lock()
        self._leaders: dict[int, str] = {}
        self._seq = 0
        self._inflight: set[int] = set()
        self._inflight_heap: list[int] = []
        self._stats = {"requests": 0, "retries": 0, "not_leader": 0, "map_refreshes": 0}
        self._coalescer: RequestCoalescer | None = None
        if coalesce:
            # Every read in a frame may return a value of the full size: keep the reply
            # within half the transport's frame limit.
            reply_budget = self._tconfig.max_frame_mb * 1024 * 1024 // 2
            self._coalescer = RequestCoalescer(
                self._current_transport, max_reads=reply_budget // max(1, max_value_bytes)
            )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AtollClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Create the transport (if not given) and fetch the cluster map."""
        if self._transport is None:
            pm = self._pm or make_plugin_manager()
            self._transport = make_transport(pm, self._tconfig, f"client-{self.client_id}", "")

            async def no_inbound(frame: Frame, sender: str) -> Frame | None:
                return None

            await self._transport.start(no_inbound)
        await self.refresh_map()

    def _current_transport(self) -> Transport:
        if self._transport is None:
            raise Unavailable("client is not connected: call connect() first")
        return self._transport

    async def close(self) -> None:
        """Close the transport if this client made it."""
        if self._coalescer is not None:
            await self._coalescer.close()
        if self._transport is not None and self._own_transport:
            await self._transport.close()
            self._transport = None

    @property
    def stats(self) -> dict[str, int]:
        """Counters: requests, retries, not_leader, map_refreshes, and with coalescing
        ``multi_frames`` (kv.multi frames sent) and ``multi_requests`` (requests in them)."""
        out = dict(self._stats)
        if self._coalescer is not None:
            out["multi_frames"] = self._coalescer.stats["frames"]
            out["multi_requests"] = self._coalescer.stats["coalesced"]
        return out

    @property
    def cluster_map(self) -> ClusterMap:
        """The cached cluster map (refreshed on StaleEpoch)."""
        if self._map is None:
            raise Unavailable("client is not connected: call connect() first")
        return self._map

    # ------------------------------------------------------------------ public API

    async def get(
        self,
        key: bytes,
        *,
        consistency: Consistency | str = Consistency.LINEARIZABLE,
        keyspace: str | None = None,
        timeout: float | None = None,
    ) -> bytes | None:
        """The value of ``key``, or None. Linearizable by default; ``"stale"`` is cheaper."""
        self._check_key(key)
        req = KVRequest(
            KVOp.GET, keyspace or self.keyspace, 0, key=key, consistency=Consistency(consistency)
        )
        reply = await self._call(req, key, timeout)
        return reply.attachments[0] if reply.header.get("f") else None

    async def put(
        self, key: bytes, value: bytes, *, keyspace: str | None = None, timeout: float | None = None
    ) -> None:
        """Set ``key`` to ``value`` (durable on a quorum when this returns)."""
        self._check_key(key)
        self._check_value(value)
        req = KVRequest(KVOp.PUT, keyspace or self.keyspace, 0, key=key, value=value)
        await self._call_write(req, key, timeout)

    async def delete(
        self, key: bytes, *, keyspace: str | None = None, timeout: float | None = None
    ) -> bool:
        """Remove ``key``; returns whether it existed."""
        self._check_key(key)
        req = KVRequest(KVOp.DELETE, keyspace or self.keyspace, 0, key=key)
        reply = await self._call_write(req, key, timeout)
        return bool(reply.header.get("x"))

    async def cas(
        self,
        key: bytes,
        expected: bytes | None,
        new: bytes | None,
        *,
        keyspace: str | None = None,
        timeout: float | None = None,
    ) -> CasResult:
        """Set ``key`` to ``new`` only if it holds ``expected`` (None: absent / delete)."""
        self._check_key(key)
        if new is not None:
            self._check_value(new)
        if expected is not None:
            self._check_value(expected)
        req = KVRequest(
            KVOp.CAS, keyspace or self.keyspace, 0, key=key, expected=expected, value=new
        )
        reply = await self._call_write(req, key, timeout)
        prev = reply.attachments[0] if reply.header.get("p") and reply.attachments else None
        return CasResult(bool(reply.header.get("ok")), prev)

    async def put_many(
        self,
        items: Mapping[bytes, bytes | None],
        *,
        keyspace: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Write many keys (None deletes). Atomic per partition; partitions run concurrently."""
        ks_name = keyspace or self.keyspace
        ks = await self._keyspace(ks_name)
        by_part: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for k, v in items.items():
            self._check_key(k)
            if v is not None:
                self._check_value(v)
            by_part.setdefault(partition_for_key(k, ks.partitions), []).append((k, v))

        async def one(part: int, its: list[tuple[bytes, bytes | None]]) -> None:
            req = KVRequest(KVOp.BATCH, ks_name, 0, items=tuple(its), partition=part)
            await self._call_write(req, its[0][0], timeout)

        async with anyio.create_task_group() as tg:
            for part, its in by_part.items():
                tg.start_soon(one, part, its)

    # ------------------------------------------------------------------ internals

    def _check_key(self, key: object) -> None:
        if not isinstance(key, bytes):
            raise InvalidRequest(f"key must be bytes, not {type(key).__name__}")
        if not key:
            raise InvalidRequest("key must not be empty")
        if len(key) > self.max_key_bytes:
            raise InvalidRequest(
                f"key of {len(key)} bytes exceeds the limit of {self.max_key_bytes} bytes"
            )

    def _check_value(self, value: object) -> None:
        if not isinstance(value, bytes):
            raise InvalidRequest(f"value must be bytes, not {type(value).__name__}")
        if len(value) > self.max_value_bytes:
            raise InvalidRequest(
                f"value of {len(value)} bytes exceeds the limit of {self.max_value_bytes} bytes"
            )

    async def _keyspace(self, name: str) -> KeyspaceRecord:
        cmap = self._map
        if cmap is None or name not in cmap.keyspaces:
            cmap = await self.refresh_map()
        try:
            return cmap.keyspaces[name]
        except KeyError:
            raise InvalidRequest(f"keyspace {name!r} does not exist") from None

    async def refresh_map(self, *, min_epoch: int = 0) -> ClusterMap:
        """Fetch the cluster map from the first endpoint or known node that answers."""
        async with self._map_lock:
            if self._map is not None and self._map.epoch > min_epoch and min_epoch:
                return self._map
            assert self._transport is not None
            candidates = list(self.endpoints)
            if self._map is not None:
                candidates += [n.endpoint for n in self._map.nodes.values()]
            last: Exception | None = None
            for addr in dict.fromkeys(candidates):
                try:
                    reply = await self._transport.request(
                        addr, Frame(MAP_REQUEST), timeout=self.attempt_timeout
                    )
                    new = ClusterMap.from_json(reply.attachments[0])
                except (AtollError, OSError, IndexError, ValueError, KeyError) as exc:
                    last = exc
                    continue
                if self._map is None or new.epoch >= self._map.epoch:
                    self._map = new
                    self._stats["map_refreshes"] += 1
                return self._map
            raise Unavailable(f"no endpoint answered with a cluster map (last error: {last!r})")

    def _next_seq(self) -> int:
        self._seq += 1
        self._inflight.add(self._seq)
        heapq.heappush(self._inflight_heap, self._seq)
        return self._seq

    def _acked_floor(self) -> int:
        """The lowest seq still waiting for its answer (every lower one was answered)."""
        heap = self._inflight_heap
        while heap and heap[0] not in self._inflight:
            heapq.heappop(heap)
        return heap[0] if heap else self._seq + 1

    async def _call_write(self, req: KVRequest, route_key: bytes, timeout: float | None) -> Frame:
        seq = self._next_seq()
        try:
            # ``req`` was built by the caller for this call alone: it gets the session.
            req.client_id = self.client_id
            req.seq = seq
            req.acked = self._acked_floor()
            return await self._call(req, route_key, timeout)
        finally:
            self._inflight.discard(seq)

    async def _call(self, req: KVRequest, route_key: bytes, timeout: float | None) -> Frame:
        assert self._transport is not None
        self._stats["requests"] += 1
        remaining = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + remaining
        backoff = 0.01
        tried: set[str] = set()
        last: Exception | None = None
        first = True
        while True:
            if not first:
                remaining = deadline - time.monotonic()
            first = False
            if remaining <= 0:
                raise Timeout(
                    f"{req.op.value} did not complete before its deadline (last error: {last!r})"
                )
            cmap = self._map
            ks = cmap.keyspaces.get(req.keyspace) if cmap is not None else None
            if ks is None or cmap is None:
                ks = await self._keyspace(req.keyspace)
                cmap = self.cluster_map
            part = (
                req.partition if req.partition >= 0 else partition_for_key(route_key, ks.partitions)
            )
            gid = ks.group_of(part)
            node_id = self._pick(gid, tried)
            node = cmap.nodes.get(node_id)
            if node is None:
                await self.refresh_map()
                continue
            frame = encode_kv_request(req, epoch=cmap.epoch)
            attempt = min(remaining, self.attempt_timeout)
            try:
                # The transport enforces the timeout itself (raising Timeout).
                if self._coalescer is not None:
                    return await self._coalescer.request(node.endpoint, frame, attempt)
                return await self._transport.request(node.endpoint, frame, timeout=attempt)
            except NotLeader as exc:
                self._stats["not_leader"] += 1
                last = exc
                hint = exc.leader_hint
                tried.add(node_id)
                if hint and hint != node_id and hint in cmap.nodes:
                    self._leaders[gid] = hint
                    if hint not in tried:
                        continue  # news of a leader not asked yet: follow it at once
                    # The hinted node already failed in this call (it may have won an
                    # election since, or it may be a dead leader its followers have not
                    # given up on): ask it again, but only after the backoff, so two
                    # nodes can never bounce the request between them in a tight loop.
                    tried.discard(hint)
                else:
                    self._leaders.pop(gid, None)
            except StaleEpoch as exc:
                last = exc
                await self.refresh_map(min_epoch=cmap.epoch)
                continue
            except (TimeoutError, OSError) as exc:
                last = exc
                tried.add(node_id)
                self._leaders.pop(gid, None)
            except AtollError as exc:
                if not exc.retryable:
                    raise
                last = exc
                tried.add(node_id)
                self._leaders.pop(gid, None)
            self._stats["retries"] += 1
            await anyio.sleep(min(backoff * (0.5 + self._rng.random()), max(0.0, remaining)))
            backoff = min(backoff * 2, 0.5)

    def _pick(self, gid: int, tried: set[str]) -> str:
        """The node to ask for group ``gid``: the cached leader, else an untried replica."""
        leader = self._leaders.get(gid)
        if leader is not None and leader not in tried:
            return leader
        rs = self.cluster_map.groups[gid]
        for r in rs.replicas:
            if r not in tried:
                return r
        tried.clear()  # every replica failed once: start over (after the backoff)
        return leader if leader is not None else rs.replicas[0]
