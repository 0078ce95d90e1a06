"""The composition root: configuration -> plugins -> a running Atoll node.

Owns: building the plugin manager, opening storage, starting the transport, the Raft
host with the meta group and every data partition this node replicates, the client
request router, cluster bootstrap and join, dispatch of inbound frames by type, and an
orderly shutdown (stop serving, fail waiters, flush and close storage).
Never: implements a protocol itself; each subsystem is used through its public API.

Bootstrap (like etcd's ``--initial-cluster``): every node listed in
``[cluster] initial_members`` hosts the meta group (group 0) with those members as
voters. Once the meta group elects a leader, that leader proposes the (idempotent)
``bootstrap`` command creating the cluster map: the nodes and the default keyspace with
its partitions placed on them. Every node then hosts the groups the map gives it. A node
that is not an initial member registers itself through a seed and serves as a
coordinator (answering NotLeader hints) until the rebalancer gives it replicas.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import anyio
import anyio.abc
import attrs
import pluggy

from atoll.coordination import KVService, KVStateMachine, PartitionStateMachine
from atoll.core import (
    MAP_REQUEST,
    AtollConfig,
    AtollError,
    ClusterMapChange,
    ConfigError,
    Frame,
    InvalidRequest,
    LeaderChange,
    LimitsConfig,
    MemberInfo,
    MembershipEvent,
    NotLeader,
    StorageEngine,
    Transport,
    Unavailable,
    clock_from_env,
    make_plugin_manager,
    make_transport,
    open_storage,
    parse_address,
    running_loop_name,
)
from atoll.core import native as native_modules
from atoll.membership import FRAME_PREFIX as SWIM_PREFIX
from atoll.membership import MembershipConfig, MembershipService
from atoll.metadata import (
    META_GROUP_ID,
    ClusterMap,
    MetaGroupStateMachine,
    NodeRecord,
    encode_meta_command,
)
from atoll.replication import BATCH_FRAME, WAL_DIR, RaftHost, WalEngine, WriteBackEngine
from atoll.telemetry import EventLoopLagProbe, HealthRegistry, PrometheusMetrics, TelemetryServer

__all__ = ["Node"]

log = logging.getLogger("atoll.node")

META_PROPOSE = "meta.propose"
KEY_PREFIX_BYTES = 4
"""Bytes the KV state machine puts before every user key (the partition's group id)."""
STATUS = "admin.status"
VERSION = "0.1.0"


class Node:
    """One Atoll node. ``await node.run()`` serves until cancelled.

    :param config: the validated configuration.
    :param plugins: extra plugin objects (tests); entry points are loaded unless
        ``load_entry_points=False``.
    """

    def __init__(
        self,
        config: AtollConfig,
        *,
        plugins: tuple[object, ...] = (),
        load_entry_points: bool = True,
        plugin_manager: pluggy.PluginManager | None = None,
    ) -> None:
        self.config = config
        self.node_id = config.node.id
        self.pm = plugin_manager or make_plugin_manager(
            plugins, load_entry_points=load_entry_points
        )
        self.engine: StorageEngine | None = None
        self.host_engine: StorageEngine | None = None
        """What the Raft host writes through: the engine, or a :class:`WalEngine` over it."""
        self.transport: Transport | None = None
        self.host: RaftHost | None = None
        self.meta: MetaGroupStateMachine | None = None
        self.kv: KVStateMachine | None = None
        self.write_back: WriteBackEngine | None = None
        self.service: KVService | None = None
        self.started_at = time.time()
        self._map_changed = anyio.Event()
        self._ready = anyio.Event()
        self._members = config.cluster.members()
        self.metrics = PrometheusMetrics()
        self.health = HealthRegistry()
        self.telemetry: TelemetryServer | None = None
        self.membership: MembershipService | None = None
        self._remote_map: ClusterMap | None = None
        self._map_pull = anyio.Event()
        self._stop = anyio.Event()

    # ------------------------------------------------------------------ properties

    @property
    def cluster_map(self) -> ClusterMap:
        """The newest cluster map this node knows: its own meta replica's, or (on a node
        outside the meta group) the newest one pulled from a peer."""
        local = self.meta.map if self.meta is not None else ClusterMap()
        remote = self._remote_map
        if remote is not None and remote.epoch > local.epoch:
            return remote
        return local

    @property
    def address(self) -> str:
        """The advertised transport address."""
        if self.config.node.advertise:
            return self.config.node.advertise
        return self.transport.address if self.transport is not None else self.config.node.listen

    def resolve(self, node_id: str) -> str | None:
        """A node id's transport address: cluster map, then gossip, then initial members."""
        rec = self.cluster_map.nodes.get(node_id)
        if rec is not None:
            return rec.address
        if self.membership is not None:
            m = self.membership.member(node_id)
            if m is not None:
                return m.address
        return self._members.get(node_id)

    def record(self) -> NodeRecord:
        """This node as the cluster map should know it."""
        n = self.config.node
        return NodeRecord(
            self.node_id,
            self.address,
            n.advertise or self.address,
            n.zone,
            n.rack,
            n.host or os.uname().nodename,
            dict(n.tags),
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Open everything, serve until cancelled, then shut down cleanly."""
        cfg = self.config
        self.pm.hook.atoll_configure(config=cfg)
        os.makedirs(cfg.node.data_dir, exist_ok=True)
        self.engine = await anyio.to_thread.run_sync(
            lambda: open_storage(self.pm, cfg.storage, cfg.node.data_dir)
        )
        try:
            self.transport = make_transport(self.pm, cfg.transport, self.node_id, cfg.node.listen)
            # The partitions' applied state is written back once per tick, not with
            # every log fsync (the log rebuilds it after a crash).
            self.write_back = WriteBackEngine(self.engine)
            self.kv = KVStateMachine(self.write_back)
            self.meta = MetaGroupStateMachine(self.engine, on_change=self._on_map_change)
            self.host_engine = await anyio.to_thread.run_sync(self._open_raft_log)
            wal = isinstance(self.host_engine, WalEngine)
            self.host = RaftHost(
                self.node_id,
                self.host_engine,
                self.transport,
                self.resolve,
                tick_seconds=cfg.raft.tick_ms / 1000,
                election_ticks=cfg.raft.election_ticks,
                heartbeat_ticks=cfg.raft.heartbeat_ticks,
                sync=cfg.storage.sync,
                lease_reads=cfg.raft.lease_reads,
                max_clock_drift=cfg.raft.max_clock_drift_ms / 1000,
                snapshot_interval_entries=cfg.raft.snapshot_interval_entries,
                write_back=self.write_back,
                # With the log in its own WAL, the write-back's commits no longer share
                # the log's writer: on a thread of their own, four ticks' worth at a time
                # (fewer B-tree pages per key on LMDB) never delay a log fsync.
                write_back_ticks=4 if wal else 1,
                write_back_thread=wal,
                on_leader_change=self._on_leader_change,
                metrics=self.metrics,
                clock=clock_from_env(),
            )
            self.service = KVService(
                self.node_id,
                self.host,
                self.kv,
                lambda: self.cluster_map,
                limits=self._effective_limits(),
                request_timeout=cfg.raft.request_timeout_ms / 1000,
            )
            voters = self._meta_voters()
            if voters:
                self.host.add_group(META_GROUP_ID, voters, self.meta)
            self._reconcile()
            self._register_health()
            if wal:
                self._register_wal_metrics()
            self.pm.hook.atoll_register_metrics(registry=self.metrics)
            await self.transport.start(self._handle)
            # After start: the transport's bound address is what gossip advertises.
            self.membership = MembershipService(
                self.transport,
                self._member_info(),
                MembershipConfig.lan(cluster=cfg.cluster.id),
                hook=self.pm.hook,
                on_event=self._on_member_event,
                metrics=self.metrics,
            )

            log.info(
                "node %s serving on %s (%s, %s)",
                self.node_id,
                self.address,
                cfg.storage.backend,
                cfg.transport.backend,
            )
            async with anyio.create_task_group() as tg:
                await tg.start(self.host.run)
                tg.start_soon(EventLoopLagProbe(self.metrics).run)
                if cfg.telemetry.listen:
                    host, port = parse_address(cfg.telemetry.listen, what="telemetry.listen")
                    self.telemetry = TelemetryServer(
                        self.metrics,
                        self.health,
                        host=host,
                        port=port,
                        debug_vars=self.status,
                    )
                    await tg.start(self.telemetry.serve)
                tg.start_soon(self._reconcile_loop)
                tg.start_soon(self._bootstrap_or_join)
                await tg.start(self.membership.run)
                tg.start_soon(self._gossip_join)
                tg.start_soon(self._map_pull_loop)
                task_status.started()
                await self._stop.wait()
                # Graceful: tell the cluster we are leaving while gossip still runs.
                await self._leave()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._shutdown()

    def _effective_limits(self) -> LimitsConfig:
        """The client-facing limits, clamped to what the storage engine can store.

        User keys are stored behind a 4-byte partition prefix, so LMDB's 511-byte key
        limit allows 507-byte user keys; a larger configured limit is lowered, loudly.
        """
        assert self.engine is not None
        lim = self.config.limits
        engine_max = self.engine.max_key_bytes - KEY_PREFIX_BYTES
        if lim.max_key_bytes > engine_max:
            log.warning(
                "limits.max_key_bytes = %d is more than the %s engine can store; using %d",
                lim.max_key_bytes,
                self.engine.backend,
                engine_max,
            )
            return attrs.evolve(lim, max_key_bytes=engine_max)
        return lim

    def stop(self) -> None:
        """Ask :meth:`run` to leave the cluster gracefully, then stop and return."""
        self._stop.set()

    async def _leave(self) -> None:
        if self.membership is None or not self.membership.core.joined:
            return
        try:
            await self.membership.leave(timeout=2.0)
            log.info("left the gossip cluster")
        except (AtollError, anyio.BrokenResourceError) as exc:
            log.warning("graceful leave incomplete: %s", exc)

    async def _shutdown(self) -> None:
        if self.host is not None:
            await self.host.close()
        if self.transport is not None:
            await self.transport.close()
        if self.engine is not None:
            engine = self.host_engine or self.engine  # a WalEngine closes its inner one
            await anyio.to_thread.run_sync(engine.close)
        log.info("node %s stopped", self.node_id)

    def _open_raft_log(self) -> StorageEngine:
        """The engine the Raft host writes through (``[raft] log_storage``)."""
        cfg = self.config
        assert self.engine is not None
        directory = os.path.join(cfg.node.data_dir, WAL_DIR)
        mode = cfg.raft.log_storage
        if mode == "auto":
            mode = "wal" if self.engine.backend == "lmdb" else "engine"
        if mode == "engine":
            if os.path.isdir(directory):
                raise ConfigError(
                    f"raft.log_storage = 'engine', but {directory} holds this node's Raft "
                    "log: set raft.log_storage = 'wal' (or 'auto' with this backend)"
                )
            return self.engine
        if self.engine.backend == "memory" and os.path.isdir(directory):
            # The memory engine starts empty: a WAL left by an earlier process belongs
            # to state that is gone, and this node starts afresh.
            shutil.rmtree(directory)
        return WalEngine(
            self.engine,
            directory,
            sync=cfg.storage.sync,
            segment_bytes=cfg.raft.wal_segment_mb * 1024 * 1024,
        )

    def _register_wal_metrics(self) -> None:
        """Gauges of the Raft WAL, read at each scrape."""
        assert isinstance(self.host_engine, WalEngine)
        wal = self.host_engine.wal
        self.metrics.gauge(
            "atoll_raft_wal_segments", "Segment files of the Raft WAL."
        ).set_function(lambda: wal.segment_count)
        self.metrics.gauge(
            "atoll_raft_wal_written_bytes", "Bytes appended to the Raft WAL since the node started."
        ).set_function(lambda: wal.stats["bytes"])
        self.metrics.gauge(
            "atoll_raft_wal_syncs", "fdatasync calls on the Raft WAL since the node started."
        ).set_function(lambda: wal.stats["syncs"])

    def _register_health(self) -> None:
        """etcd-shaped probes: /livez (restart would fix it), /readyz (can serve)."""

        def storage_ok() -> str | None:
            try:
                assert self.engine is not None
                self.engine.get("meta", b"applied")
            except Exception as exc:
                return f"storage engine failed a read: {exc}"
            return None

        def has_map() -> str | None:
            return None if self._ready.is_set() else "cluster map does not list this node yet"

        def groups_led() -> str | None:
            assert self.host is not None
            missing = [gid for gid, g in self.host.groups.items() if g.leader_id is None]
            return f"{len(missing)} local groups have no known leader" if missing else None

        def writes_ok() -> str | None:
            err = self.host.degraded if self.host is not None else None
            return f"storage writes are failing: {err.message}" if err is not None else None

        self.health.add_liveness_check("storage", storage_ok)
        self.health.add_readiness_check("storage_writes", writes_ok)
        self.health.add_readiness_check("cluster_map", has_map)
        self.health.add_readiness_check("raft_leaders", groups_led)

    def _meta_voters(self) -> list[str]:
        cmap = self.cluster_map
        if cmap.meta_voters:
            return list(cmap.meta_voters) if self.node_id in cmap.meta_voters else []
        if self._members:
            return sorted(self._members) if self.node_id in self._members else []
        if not self.config.node.seeds:
            return [self.node_id]  # a lone node with nothing to join bootstraps itself
        return []

    # ------------------------------------------------------------------ map changes

    def _member_info(self) -> MemberInfo:
        n = self.config.node
        return MemberInfo(
            self.node_id,
            self.address,
            n.zone,
            n.rack,
            n.host or os.uname().nodename,
            dict(n.tags),
            VERSION,
            self.cluster_map.epoch,
        )

    async def _gossip_join(self) -> None:
        """Join the gossip cluster through the other initial members and the seeds."""
        seeds = [a for nid, a in sorted(self._members.items()) if nid != self.node_id]
        seeds += [s for s in self.config.node.seeds if s != self.address]
        seeds = list(dict.fromkeys(seeds))
        if not seeds or self.membership is None:
            return
        delay = 0.5
        while True:
            try:
                await self.membership.join(seeds)
                log.info("joined gossip through %s", seeds)
                return
            except AtollError as exc:
                log.info("gossip join not done yet (%s); retrying", exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _on_member_event(self, event: MembershipEvent) -> None:
        if event.kind in ("dead", "left", "removed") and self.host is not None:
            self.host.on_node_dead(event.member.node_id)
        if event.member.meta_epoch > self.cluster_map.epoch:
            self._map_pull.set()

    async def _map_pull_loop(self) -> None:
        """A node learns of a newer map epoch by gossip: fetch that map from a peer."""
        assert self.transport is not None
        while True:
            await self._map_pull.wait()
            self._map_pull = anyio.Event()
            if self.membership is None:
                continue
            newer = sorted(
                (m for m in self.membership.members() if m.meta_epoch > self.cluster_map.epoch),
                key=lambda m: -m.meta_epoch,
            )
            for m in newer[:3]:
                try:
                    reply = await self.transport.request(m.address, Frame(MAP_REQUEST), timeout=2.0)
                    cmap = ClusterMap.from_json(reply.attachments[0])
                except (AtollError, OSError, ValueError, IndexError) as exc:
                    log.debug("map pull from %s failed: %r", m.node_id, exc)
                    continue
                if cmap.epoch > self.cluster_map.epoch:
                    self._remote_map = cmap
                    self._on_map_change(cmap)
                break

    def _on_map_change(self, cmap: ClusterMap) -> None:
        self._map_changed.set()
        if self.membership is not None and self.membership.local.meta_epoch < cmap.epoch:
            self.membership.update_metadata(meta_epoch=cmap.epoch)
        try:
            self.pm.hook.atoll_cluster_map_changed(
                change=ClusterMapChange(
                    cmap.epoch, {"nodes": len(cmap.nodes), "groups": len(cmap.groups)}
                )
            )
        except Exception:
            log.exception("a plugin failed in atoll_cluster_map_changed")

    def _on_leader_change(self, change: LeaderChange) -> None:
        try:
            self.pm.hook.atoll_leader_changed(change=change)
        except Exception:
            log.exception("a plugin failed in atoll_leader_changed")

    def _reconcile(self) -> None:
        """Host every group the map places on this node."""
        assert self.host is not None and self.kv is not None and self.meta is not None
        cmap = self.cluster_map
        if self.node_id in cmap.meta_voters and self.host.group(META_GROUP_ID) is None:
            self.host.add_group(META_GROUP_ID, list(cmap.meta_voters), self.meta)
        for rs in cmap.groups_on(self.node_id):
            if self.host.group(rs.group_id) is None:
                self.host.add_group(
                    rs.group_id,
                    list(rs.replicas),
                    PartitionStateMachine(self.kv, rs.group_id),
                    priorities={rs.replicas[0]: 1},
                )

    async def _reconcile_loop(self) -> None:
        while True:
            await self._map_changed.wait()
            self._map_changed = anyio.Event()
            self._reconcile()

    # ------------------------------------------------------------------ bootstrap

    async def _bootstrap_or_join(self) -> None:
        """Make sure the cluster map exists and lists this node, retrying until it does."""
        delay = 0.05
        while True:
            cmap = self.cluster_map
            if cmap.epoch and cmap.nodes.get(self.node_id) == self.record():
                self._ready.set()
                return
            try:
                if not cmap.epoch and self._meta_voters():
                    await self._propose_bootstrap()
                else:
                    await self.propose_meta(
                        encode_meta_command("register_node", node=self.record()), timeout=2.0
                    )
            except (AtollError, OSError) as exc:
                log.debug("bootstrap/join not done yet: %r", exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _propose_bootstrap(self) -> None:
        g = self.host.group(META_GROUP_ID) if self.host is not None else None
        if g is None or not g.is_leader:
            return  # only the meta leader bootstraps; the others wait for the map
        members = self._members or {self.node_id: self.address}
        nodes = [
            self.record() if nid == self.node_id else NodeRecord(nid, addr)
            for nid, addr in sorted(members.items())
        ]
        rf = min(self.config.cluster.replication_factor, len(nodes))
        await g.propose(
            encode_meta_command(
                "bootstrap",
                cluster_id=self.config.cluster.id,
                nodes=nodes,
                keyspaces=[
                    {"name": "default", "partitions": self.config.cluster.partitions, "rf": rf}
                ],
            ),
            timeout=5.0,
        )

    async def propose_meta(self, command: bytes, *, timeout: float) -> dict[str, Any]:
        """Propose a metadata command at the meta leader (forwarding if needed)."""
        assert self.host is not None and self.transport is not None
        g = self.host.group(META_GROUP_ID)
        if g is not None and g.is_leader:
            result = await g.propose(command, timeout=timeout)
            return dict(result)
        target = g.leader_id if g is not None else None
        candidates = [target] if target else []
        candidates += [n for n in self.cluster_map.meta_voters if n != self.node_id]
        addresses = [a for a in (self.resolve(n) for n in candidates if n) if a]
        addresses += list(self.config.node.seeds)
        for addr in dict.fromkeys(addresses):
            if addr == self.address:
                continue
            try:
                reply = await self.transport.request(
                    addr, Frame(META_PROPOSE, {}, (command,)), timeout=timeout
                )
                return dict(reply.header)
            except (AtollError, OSError) as exc:
                log.debug("meta proposal via %s failed: %r", addr, exc)
        raise Unavailable("no meta leader reachable")

    # ------------------------------------------------------------------ inbound

    async def _handle(self, frame: Frame, sender: str) -> Frame | None:
        assert self.host is not None and self.service is not None
        t = frame.type
        if t == BATCH_FRAME:
            await self.host.handle_frame(frame, sender)
            return None
        if t.startswith(SWIM_PREFIX) and self.membership is not None:
            return await self.membership.handle_frame(frame, sender)
        if self.service.handles(t):
            return await self.service.handle(frame, sender)
        if t == META_PROPOSE:
            g = self.host.group(META_GROUP_ID)
            if g is None or not g.is_leader:
                raise NotLeader(leader_hint=g.leader_id if g else None)
            if len(frame.attachments) != 1:
                raise InvalidRequest("meta.propose takes one attachment")
            result = await g.propose(frame.attachments[0], timeout=5.0)
            return Frame("meta.propose.ok", dict(result))
        if t == STATUS:
            return Frame("admin.status.ok", self.status())
        raise InvalidRequest(f"unknown request type {t!r}")

    def status(self) -> dict[str, Any]:
        """A JSON-safe summary of this node (what ``atoll status`` shows)."""
        cmap = self.cluster_map
        groups: dict[str, Any] = {}
        leaders = 0
        if self.host is not None:
            for gid, g in sorted(self.host.groups.items()):
                st = g.node.status()
                leaders += g.is_leader
                groups[str(gid)] = {
                    "role": st.role.value,
                    "term": st.term,
                    "leader": st.leader_id,
                    "commit": st.commit,
                    "applied": st.applied,
                }
        return {
            "node_id": self.node_id,
            "address": self.address,
            "version": VERSION,
            "epoch": cmap.epoch,
            "cluster_id": cmap.cluster_id,
            "ready": self._ready.is_set(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "storage": self.config.storage.backend,
            "transport": self.config.transport.backend,
            "event_loop": running_loop_name(),
            "native": native_modules.status(),
            "groups": groups,
            "leaders": leaders,
            "quiesced": self.host.quiesced_groups() if self.host is not None else 0,
            "host": dict(self.host.stats) if self.host is not None else {},
            "requests": dict(self.service.stats) if self.service is not None else {},
            "telemetry": self.telemetry.url if self.telemetry is not None else None,
            "members": {
                m.node_id: {"state": m.state.value, "address": m.address, "epoch": m.meta_epoch}
                for m in (self.membership.members() if self.membership is not None else [])
            },
        }

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the cluster map exists and lists this node."""
        with anyio.fail_after(timeout):
            await self._ready.wait()
