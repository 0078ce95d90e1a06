"""The multi-group Raft host: the anyio shell that runs many Raft groups on one node.

Owns: ticking every group, stepping inbound messages, the Ready loop across all groups
(one WriteBatch and one fsync per cycle for every group's log before any message that
promises durability leaves), coalescing all messages to one peer into one frame per
cycle, applying committed entries to each group's state machine, completing proposals
and linearizable reads, snapshots and log compaction, and restart recovery.
Never: implements Raft rules (the pure :class:`RaftNode` does) or knows what a state
machine's commands mean.

Order per cycle (etcd's): persist -> send -> apply -> advance. Leader appends and
heartbeats (``Ready.messages``) are sent before the fsync finishes; votes and
acknowledgements (``Ready.messages_after_persist``) only after it. Committed entries'
state-machine writes join the same batch as the log (one write per cycle), except those
of the groups whose state machine reads through the host's write-back buffer
(:class:`WriteBackEngine`): they are staged there and written once per tick. A proposal
is answered as soon as its entry is committed (durable on a quorum) and applied in
memory, as etcd does; linearizable reads wait until reads can see the applied state
(written, or staged in the buffer). Only entries,
snapshots, a new term or a vote force an fsync; a commit-index-only hard state does not.
The fsync runs in a worker thread, so the event loop keeps receiving while the disk
works, and proposals that arrive meanwhile are batched into the next cycle (group
commit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.abc

from atoll.core import (
    Clock,
    Frame,
    FrameError,
    LeaderChange,
    MetricsRegistry,
    Rng,
    StorageEngine,
    StorageError,
    StorageSnapshot,
    SystemClock,
    Transport,
    TransportError,
    Unavailable,
    WriteBatch,
    make_rng,
)

from ._config import RaftConfig
from ._core import RaftNode
from ._engine_log import EngineLogStorage
from ._group import (
    Applied,
    RaftGroup,
    Readies,
    advance_readies,
    apply_readies,
    by_peer,
    collect_readies,
    commit_staged,
    committed_count,
    early_messages,
    late_messages,
    mark_durable,
    serve_reads,
    stage_readies,
    take_messages,
    tick_groups,
)
from ._ready import Ready
from ._storage import GroupStateMachine
from ._types import Entry, Message, SnapshotMeta
from ._wire import BATCH_FRAME, decode_batch, encode_batch
from ._writeback import WriteBackEngine

__all__ = ["BATCH_FRAME", "GroupStateMachine", "RaftGroup", "RaftHost"]

log = logging.getLogger("atoll.replication")


class RaftHost:
    """Runs every Raft group of a node over one storage engine and one transport.

    :param resolve: maps a node id to its transport address (the cluster map or
        membership knows); None means "unknown now": messages to it are dropped and the
        group told the peer is unreachable.
    :param sync: fsync each cycle's write. ``False`` is UNSAFE: acknowledged writes can
        be lost if a majority crashes.
    """

    def __init__(
        self,
        node_id: str,
        engine: StorageEngine,
        transport: Transport,
        resolve: Callable[[str], str | None],
        *,
        tick_seconds: float = 0.1,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        sync: bool = True,
        lease_reads: bool = True,
        max_clock_drift: float = 0.05,
        snapshot_interval_entries: int = 10_000,
        max_uncommitted_bytes: int = 64 * 1024 * 1024,
        quiesce_after_ticks: int | None = None,
        separate_apply_entries: int = 64,
        write_back: WriteBackEngine | None = None,
        write_back_ops: int = 8192,
        write_back_ticks: int = 1,
        write_back_thread: bool = False,
        clock: Clock | None = None,
        rng: Rng | None = None,
        metrics: MetricsRegistry | None = None,
        on_leader_change: Callable[[LeaderChange], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.engine = engine
        self.transport = transport
        self.resolve = resolve
        self.tick_seconds = tick_seconds
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.sync = sync
        self.lease_reads = lease_reads
        self.max_clock_drift = max_clock_drift
        self.snapshot_interval_entries = snapshot_interval_entries
        self.max_uncommitted_bytes = max_uncommitted_bytes
        self.quiesce_after_ticks = (
            2 * election_ticks if quiesce_after_ticks is None else quiesce_after_ticks
        )
        """Idle ticks after which a leader puts its group to sleep (0: never)."""
        self.separate_apply_entries = separate_apply_entries
        """A cycle applying at least this many entries applies them while the log's
        fsync runs and writes their results after the responses leave (0: never)."""
        self.write_back = write_back
        """The buffer the state machines that read through it write to (see
        :class:`WriteBackEngine`): written to the engine once per tick, or sooner when
        ``write_back_ops`` operations are staged, without an fsync of its own."""
        self.write_back_ops = write_back_ops
        self.write_back_thread = write_back_thread
        """Write the buffer on a thread of its own, beside the log's writes. Worth it when
        the log does not share the engine's write lock (a :class:`WalEngine`): a
        write-back commit then never delays a cycle's log fsync."""
        self._wb_writer: concurrent.futures.ThreadPoolExecutor | None = None
        self._wb_inflight: tuple[asyncio.Future[None], WriteBatch, int] | None = None
        """The write-back buffer's write in progress (at most one): its future, batch
        and mark."""
        self.write_back_ticks = write_back_ticks
        self._wb_due = False
        """``write_back_ticks`` ticks passed since the buffer was last written."""
        self._wb_ticks = 0
        self._run_ended = False
        self.clock = clock or SystemClock()
        self.rng = rng or make_rng()
        self.on_leader_change = on_leader_change
        self.groups: dict[int, RaftGroup] = {}
        self._wake_event = asyncio.Event()
        self._in_cycle = False
        self._closed = False
        self._bg: _BackgroundWrite | None = None
        """The state-machine write still running after its cycle ended (at most one):
        the next cycle sends its early messages, then waits for it before it applies or
        writes anything, so writes stay in order and applies read what it wrote."""
        self._snapshotter: concurrent.futures.ThreadPoolExecutor | None = None
        """The one thread snapshots are built on (off the event loop: serialising a
        partition takes time in proportion to its size)."""
        self._snaps_building: dict[int, asyncio.Future[bytes]] = {}
        self._snaps_built: list[tuple[RaftGroup, SnapshotMeta, int, bytes]] = []
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None
        """The one thread engine writes run on (off the event loop, so a slow fsync never
        delays a heartbeat); cheaper per write than anyio's worker-thread pool. Made on
        first use, shut down when :meth:`run` ends."""
        self.degraded: StorageError | None = None
        """The storage error blocking writes right now (None when healthy)."""
        self.stats: dict[str, float] = {
            "cycles": 0,
            "fsyncs": 0,
            "entries_persisted": 0,
            "entries_applied": 0,
            "frames_sent": 0,
            "messages_sent": 0,
            "messages_dropped": 0,
            "bad_frames": 0,
            "quiesced": 0,
            "write_backs": 0,
        }
        self._m_fsync = self._m_proposals = self._m_leader_changes = None
        if metrics is not None:
            self._m_fsync = metrics.histogram(
                "atoll_disk_wal_fsync_duration_seconds",
                "Duration of the Raft host's batched log writes with fsync.",
            )
            self._m_proposals = metrics.counter(
                "atoll_raft_proposals_committed_total", "Entries applied by all groups."
            )
            self._m_leader_changes = metrics.counter(
                "atoll_raft_leader_changes_seen_total", "Leader changes seen by local groups."
            )

    # ------------------------------------------------------------------ groups

    def add_group(
        self,
        group_id: int,
        voters: Sequence[str],
        sm: GroupStateMachine,
        *,
        bootstrap: bool = True,
        priorities: dict[str, int] | None = None,
    ) -> RaftGroup:
        """Host a replica of ``group_id``.

        A replica with no stored state and ``bootstrap=True`` starts with ``voters`` as
        the group's initial membership (every initial replica must be given the same
        list). With ``bootstrap=False`` it starts empty and waits for the leader to send
        it a snapshot (a replica added by a membership change). A replica with stored
        state recovers from its hard state, log and snapshot; ``voters`` is ignored.
        """
        if group_id in self.groups:
            return self.groups[group_id]
        storage = EngineLogStorage(self.engine, group_id)
        if storage.is_empty and bootstrap:
            batch = WriteBatch()
            storage.stage_bootstrap(batch, list(voters))
            self.engine.write(batch, sync=self.sync)
        cfg = RaftConfig(
            node_id=self.node_id,
            group_id=group_id,
            election_ticks=self.election_ticks,
            heartbeat_ticks=self.heartbeat_ticks,
            applied=max(sm.applied_index(), storage.first_index() - 1),
            tick_seconds=self.tick_seconds,
            max_clock_drift=self.max_clock_drift,
            lease_reads=self.lease_reads,
            max_uncommitted_bytes=self.max_uncommitted_bytes,
            snapshot_interval_entries=self.snapshot_interval_entries,
            forward_proposals=False,
            # Followers learn the commit index from the next append or heartbeat: under
            # load with many groups this halves the messages per write.
            commit_broadcast=False,
            # A busy group's appends stand in for its heartbeats (a third of the
            # messages with 64 groups under load).
            heartbeat_piggyback=True,
            priorities=dict(priorities or {}),
        )
        node = RaftNode(cfg, storage, rng=make_rng(self.rng.getrandbits(64)), clock=self.clock)
        group = RaftGroup(self, node, storage, sm)
        wb = self.write_back
        group.deferred = wb is not None and getattr(sm, "state_engine", None) is wb
        self.groups[group_id] = group
        self.wake()
        return group

    def group(self, group_id: int) -> RaftGroup | None:
        """The local replica of ``group_id``, if hosted here."""
        return self.groups.get(group_id)

    def on_node_dead(self, node_id: str) -> None:
        """The failure detector declared ``node_id`` dead: wake every sleeping group it
        led, so the followers' election timers run and a new leader is elected."""
        for g in self.groups.values():
            if g.node.quiesced and g.node.leader_id == node_id:
                g.node.unquiesce()
        self.wake()

    def quiesced_groups(self) -> int:
        """How many hosted groups are asleep right now."""
        return sum(1 for g in self.groups.values() if g.node.quiesced)

    def remove_group(self, group_id: int) -> None:
        """Stop hosting ``group_id`` (its stored data stays until deleted)."""
        g = self.groups.pop(group_id, None)
        if g is not None:
            g._fail_all(Unavailable(f"group {group_id} was removed from this node"))

    # ------------------------------------------------------------------ running

    def wake(self) -> None:
        """Ask the loop to run a cycle now (new proposal, read or inbound message)."""
        self._wake_event.set()

    async def handle_frame(self, frame: Frame, sender: str) -> None:
        """Step every message of an inbound ``raft.batch`` frame into its group."""
        try:
            msgs = decode_batch(frame)
        except FrameError as exc:
            self.stats["bad_frames"] += 1
            log.warning("dropping malformed raft frame from %s: %s", sender, exc)
            return
        for m in msgs:
            g = self.groups.get(m.group_id)
            if g is None or m.dst != self.node_id:
                continue
            try:
                g.node.step(m)
            except Exception as exc:  # a bad message must never stop the node
                self.stats["bad_frames"] += 1
                log.warning("group %d: message from %s rejected: %r", m.group_id, sender, exc)
        self.wake()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the ticker and the Ready loop until cancelled.

        The ticker is its own task: while a cycle waits for a slow fsync, ticks still
        happen and the messages that may leave early (heartbeats, their responses,
        appends) are sent at once, so a stalled disk never costs a leader its followers.
        """
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._ticker)
                task_status.started()
                while not self._closed:
                    await self._wake_event.wait()
                    self._wake_event.clear()
                    self._in_cycle = True
                    try:
                        await self.cycle()
                    finally:
                        self._in_cycle = False
                tg.cancel_scope.cancel()
        finally:
            self._run_ended = True
            if self._writer is not None:
                self._writer.shutdown(wait=False)
                self._writer = None
            if self._wb_writer is not None:
                self._wb_writer.shutdown(wait=False)
                self._wb_writer = None
            if self._snapshotter is not None:
                self._snapshotter.shutdown(wait=False, cancel_futures=True)
                self._snapshotter = None

    async def _ticker(self) -> None:
        next_tick = anyio.current_time() + self.tick_seconds
        while not self._closed:
            await anyio.sleep(max(0.0, next_tick - anyio.current_time()))
            now = anyio.current_time()
            self.stats["quiesced"] += tick_groups(
                list(self.groups.values()), self.quiesce_after_ticks
            )
            self._wb_ticks += 1
            if self._wb_ticks >= self.write_back_ticks:
                self._wb_due = True
            # Never bunch up ticks after a stall: one tick per interval, from now.
            next_tick = max(next_tick + self.tick_seconds, now + self.tick_seconds / 2)
            if self._in_cycle:
                early = take_messages(list(self.groups.values()))
                if early:
                    await self._send_all(early)
            self.wake()

    async def cycle(self) -> int:
        """Handle every group's pending Ready once; returns how many groups had one."""
        readies = collect_readies(list(self.groups.values()))
        if not readies:
            if self._bg is not None and self._bg.future.done():
                await self._drain_bg()  # a failed background write is retried here
            if self._snaps_built:
                await self._write_snapshots(WriteBatch(), [])
            self._maybe_write_back()
            return 0
        self.stats["cycles"] += 1
        # 1. persist every group's Ready into one batch (one fsync for all of them)
        batch = WriteBatch()
        must_sync, restored, staged = stage_readies(readies, batch)
        self.stats["entries_persisted"] += staged
        early_sent = False
        if self._bg is not None:
            # The previous cycle's state-machine write is still running. The messages
            # that may leave before this cycle's write go now, then it is awaited:
            # applying reads the engine, and writes stay in order.
            early = early_messages(readies)
            if early:
                await self._send_all(early)
            early_sent = True
            await self._drain_bg()
        # 2. apply committed entries and answer their proposals. Committed entries are
        # durable on a quorum and their results are known: proposals are answered from
        # the in-memory apply, as etcd does. Reads still wait until the applied state is
        # written (the read barrier checks the durable applied index).
        sync = must_sync and self.sync
        applied: Applied = []
        if restored:
            # A restored partition's state replaces what the buffer holds of it.
            await self._flush_write_back()
            # The applied entries need the restored state: a second write.
            await self._persist(batch, readies, sync=sync, early_sent=early_sent)
            apply_batch = WriteBatch()
            applied = self._apply(readies, apply_batch)
            await self._send_late(readies)
            if apply_batch:
                await self._write(apply_batch, sync=False)
        elif not must_sync and batch:
            # Nothing here needs an fsync (no entries, term or vote; only the commit index
            # and the applied state, which the log can rebuild): the write runs in the
            # background and the next cycle need not wait for it to start.
            applied = self._apply(readies, batch)
            commit_staged(readies)
            self._start_bg(batch, applied)
            applied = []
            if not early_sent:
                early = early_messages(readies)
                if early:
                    await self._send_all(early)
            await self._send_late(readies)
        elif (
            sync
            and self.separate_apply_entries
            and committed_count(readies) >= self.separate_apply_entries
        ):
            # A big apply runs while the log's fsync does, and its writes (a page per
            # random key on a B-tree engine) go in a second write after the responses
            # that wait for the log's fsync have left: they are not on the commit path.
            apply_batch = WriteBatch()

            def apply_now() -> None:
                applied.extend(self._apply(readies, apply_batch))

            await self._persist(
                batch, readies, sync=True, meanwhile=apply_now, early_sent=early_sent
            )
            await self._send_late(readies)
            if apply_batch:
                self._start_bg(apply_batch, applied)
                applied = []
        else:
            # Small applies join the log's batch (the write-back buffer's groups':
            # the buffer): the log, the applied index and the data become durable in
            # one atomic write.
            applied = self._apply(readies, batch)
            await self._persist(batch, readies, sync=sync, early_sent=early_sent)
            await self._send_late(readies)
        # The applied entries' writes are in the engine now.
        mark_durable(applied)
        if restored:
            for g, rd in readies:
                if rd.snapshot is not None and not rd.snapshot.is_empty:
                    g.durable_applied = g.sm.applied_index()
        # 3. the reads the applied state allows
        serve_reads(applied)
        # 4. reads, events, snapshots, advance
        snap_batch = WriteBatch()
        compacted: list[RaftGroup] = []
        if any(rd.snapshot_request is not None for _, rd in readies):
            # A snapshot reads the applied state from the engine, and the log is
            # compacted up to it: the buffer is written out first.
            await self._flush_write_back()
        for g, rd in readies:
            for ev in rd.events:
                if isinstance(ev, LeaderChange):
                    self._leader_changed(g, ev)
            if rd.snapshot_request is not None:
                if self._bg is not None:
                    await self._drain_bg()  # the snapshot reads the applied state
                self._start_snapshot(g, snap_batch, compacted)
        advance_readies(readies)
        await self._write_snapshots(snap_batch, compacted)
        self._maybe_write_back()
        return len(readies)

    def _maybe_write_back(self) -> None:
        """Start writing the write-back buffer when a tick has passed since the last
        write or it holds ``write_back_ops`` operations, unless a write of it is still
        running (a failed one is started again)."""
        wb = self.write_back
        if wb is None:
            return
        inflight = self._wb_inflight
        if inflight is not None:
            fut, batch, mark = inflight
            if not fut.done():
                return
            if fut.cancelled() or fut.exception() is not None:
                self._start_write_back(batch, mark)  # retried until it succeeds
            return
        if wb.pending_ops and (self._wb_due or wb.pending_ops >= self.write_back_ops):
            self._wb_due = False
            self._wb_ticks = 0
            batch, mark = wb.take()
            self._start_write_back(batch, mark)

    def _start_write_back(self, batch: WriteBatch, mark: int) -> None:
        fut = self._submit_write_back(batch)
        entry = (fut, batch, mark)
        self._wb_inflight = entry
        fut.add_done_callback(lambda f: self._write_back_done(entry, f))

    def _write_back_done(
        self, entry: tuple[asyncio.Future[None], WriteBatch, int], fut: asyncio.Future[None]
    ) -> None:
        if self._wb_inflight is not entry:
            return
        if fut.cancelled() or fut.exception() is not None:
            exc = None if fut.cancelled() else fut.exception()
            if self.degraded is None:
                log.error("writing applied state failed, retrying until it succeeds: %r", exc)
            if isinstance(exc, StorageError):
                self.degraded = exc
            self.wake()  # the next cycle starts it again
            return
        self._wb_inflight = None
        self._wrote_back(entry[2])

    def _wrote_back(self, mark: int) -> None:
        """The write-back buffer's batch up to ``mark`` is in the engine."""
        assert self.write_back is not None
        self.write_back.flushed(mark)
        self.stats["write_backs"] += 1

    async def _flush_write_back_once(self) -> None:
        """At close: write what the buffer holds, once (a failure is raised, not
        retried: the log rebuilds the applied state at the next start)."""
        wb = self.write_back
        assert wb is not None
        inflight = self._wb_inflight
        if inflight is not None:
            await _finish_shielded(inflight[0])
            self._wb_inflight = None
            self._wrote_back(inflight[2])
        if wb.pending_ops:
            batch, mark = wb.take()
            await _finish_shielded(self._submit_write_back(batch))
            self._wrote_back(mark)

    async def _flush_write_back(self) -> None:
        """Write everything the write-back buffer holds to the engine and wait for it
        (storage failures are retried until the write succeeds)."""
        wb = self.write_back
        if wb is None:
            return
        inflight = self._wb_inflight
        if inflight is not None:
            fut, batch, mark = inflight
            await self._write(batch, sync=False, started=fut)
            if self._wb_inflight is inflight:
                self._wb_inflight = None
                self._wrote_back(mark)
        if wb.pending_ops:
            batch, mark = wb.take()
            await self._write(batch, sync=False, started=self._submit_write_back(batch))
            self._wrote_back(mark)

    async def _persist(
        self,
        batch: WriteBatch,
        readies: list[tuple[RaftGroup, Ready]],
        *,
        sync: bool,
        meanwhile: Callable[[], None] | None = None,
        early_sent: bool = False,
    ) -> None:
        """Write ``batch`` while the messages that may leave early are sent: the write
        starts on the writer thread first, the sends run meanwhile (a peer slow to take
        them never delays the fsync), then ``meanwhile`` (CPU work that overlaps the
        write), then the write is awaited. ``early_sent``: those messages already left."""
        early = [] if early_sent else early_messages(readies)
        if batch:
            started = self._submit(batch, sync)
            try:
                if early:
                    await self._send_all(early)
                if meanwhile is not None:
                    meanwhile()
            except BaseException:
                with contextlib.suppress(Exception):  # the first error wins
                    await _finish_shielded(started)
                raise
            await self._write(batch, sync=sync, started=started)
        else:
            if early:
                await self._send_all(early)
            if meanwhile is not None:
                meanwhile()
        commit_staged(readies)

    def _start_bg(
        self, batch: WriteBatch, applied: list[tuple[RaftGroup, tuple[Entry, ...], list[Any]]]
    ) -> None:
        """Start writing ``batch`` (state-machine writes, no fsync needed) and let the
        cycle end: the groups' durable applied index rises, and their reads are served,
        when it is done."""
        bg = _BackgroundWrite(
            self._submit(batch, False), batch, [(g, entries[-1].index) for g, entries, _ in applied]
        )
        self._bg = bg
        bg.future.add_done_callback(lambda _f: self._bg_done(bg))

    def _bg_done(self, bg: _BackgroundWrite) -> None:
        if bg.future.cancelled() or bg.future.exception() is not None:
            self.wake()  # the loop retries it (see _drain_bg)
            return
        self._finish_bg(bg)

    def _finish_bg(self, bg: _BackgroundWrite) -> None:
        if self._bg is bg:
            self._bg = None
        for g, index in bg.applied:
            g.durable_applied = max(g.durable_applied, index)
        for g, _ in bg.applied:
            g._serve_reads()

    async def _drain_bg(self) -> None:
        """Wait for the background write; on a storage failure retry it (in order: no
        later write starts before it succeeds)."""
        bg = self._bg
        if bg is None:
            return
        await self._write(bg.batch, sync=False, started=bg.future)
        self._finish_bg(bg)

    async def _send_late(self, readies: list[tuple[RaftGroup, Ready]]) -> None:
        """Send the messages that promise durability (after the log's write)."""
        late = late_messages(readies)
        if late:
            await self._send_all(late)

    def _apply(self, readies: Readies, batch: WriteBatch) -> Applied:
        """Apply every Ready's committed entries into ``batch`` (those of the groups that
        write through the write-back buffer into the buffer) and answer their proposals;
        results per group.

        A deferred group's reads see its applies as soon as they are staged: its
        waiting reads are served here, before the cycle's write, as its proposals are.
        """
        wb = self.write_back
        if wb is None:
            applied, count, proposals = apply_readies(readies, batch)
        else:
            deferred = WriteBatch()
            applied, count, proposals = apply_readies(readies, batch, deferred)
            if deferred:
                wb.stage(deferred)
            for g, entries, _ in applied:
                if g.deferred:
                    g.durable_applied = max(g.durable_applied, entries[-1].index)
                    g._serve_reads()
        self.stats["entries_applied"] += count
        if proposals and self._m_proposals is not None:
            self._m_proposals.inc(proposals)
        return applied

    def _start_snapshot(self, g: RaftGroup, batch: WriteBatch, compacted: list[RaftGroup]) -> None:
        """Snapshot ``g`` as of its applied index (the engine holds exactly that state:
        no write is in flight). With ``snapshot_at`` the state machine serialises an
        engine read view on the snapshot thread and the compaction is written by a later
        cycle; otherwise it serialises here and the compaction joins ``batch``."""
        applied = g.sm.applied_index()
        if applied < g.storage.first_index() or g.group_id in self._snaps_building:
            return
        meta = SnapshotMeta(applied, g.storage.term(applied), g.node.conf_state)
        build: Callable[[StorageSnapshot], bytes] | None = getattr(g.sm, "snapshot_at", None)
        if build is None:
            g.storage.stage_compaction(batch, meta, g.sm.snapshot(), g.node.compaction_floor())
            compacted.append(g)
            return
        view = self.engine.snapshot()

        def run() -> bytes:
            try:
                return build(view)
            finally:
                view.close()

        if self._snapshotter is None:
            self._snapshotter = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="atoll-raft-snapshot"
            )
        try:
            fut = asyncio.wrap_future(self._snapshotter.submit(run))
        except BaseException:
            view.close()
            raise
        self._snaps_building[g.group_id] = fut
        restores = g.restores
        fut.add_done_callback(lambda f: self._snapshot_built(g, meta, restores, f))

    def _snapshot_built(
        self, g: RaftGroup, meta: SnapshotMeta, restores: int, fut: asyncio.Future[bytes]
    ) -> None:
        if self._snaps_building.get(g.group_id) is fut:
            del self._snaps_building[g.group_id]
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("group %d: building a snapshot at %d failed: %r", g.group_id, meta.index, exc)
            return
        self._snaps_built.append((g, meta, restores, fut.result()))
        self.wake()

    async def _write_snapshots(self, batch: WriteBatch, compacted: list[RaftGroup]) -> None:
        """Write ``batch`` (compactions staged by this cycle) with the snapshots built
        since the last cycle, and compact their logs."""
        built, self._snaps_built = self._snaps_built, []
        for g, meta, restores, data in built:
            if (
                self.groups.get(g.group_id) is not g
                or g.restores != restores  # a newer snapshot replaced the state meanwhile
                or g.storage.snapshot_index >= meta.index
                or g in compacted
            ):
                continue
            g.storage.stage_compaction(batch, meta, data, g.node.compaction_floor())
            compacted.append(g)
            log.debug(
                "group %d: snapshot at index %d stored, log compacted", g.group_id, meta.index
            )
        if not batch:
            return
        if self._bg is not None:
            await self._drain_bg()
        await self._write(batch, sync=False)
        cleanup = WriteBatch()
        for g in compacted:
            g.storage.commit_staged()
            g.storage.stage_log_cleanup(cleanup)  # nothing reads below the first index now
        if cleanup:
            await self._write(cleanup, sync=False)

    def _leader_changed(self, g: RaftGroup, ev: LeaderChange) -> None:
        if self._m_leader_changes is not None:
            self._m_leader_changes.inc()
        if ev.leader_id != self.node_id:
            g._on_leader_lost()
        if self.on_leader_change is not None:
            try:
                self.on_leader_change(ev)
            except Exception:
                log.exception("leader change callback failed")

    async def _write(
        self,
        batch: WriteBatch,
        *,
        sync: bool,
        started: asyncio.Future[None] | None = None,
    ) -> None:
        """Write ``batch``; on a storage failure keep retrying the same batch.

        Nothing was acknowledged for this batch yet, so retrying is safe; until it
        succeeds no Ready advances (no entry is acknowledged or applied) and new
        proposals fail fast with the storage error, while the node keeps answering.
        """
        t0 = time.perf_counter()
        delay = 0.05
        while True:
            try:
                if started is None:
                    started = self._submit(batch, sync)
                await _finish_shielded(started)
                break
            except StorageError as exc:
                if self.degraded is None:
                    log.error("storage write failed, retrying until it succeeds: %s", exc)
                self.degraded = exc
                started = None
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if self.degraded is not None:
            log.warning("storage writes succeed again")
            self.degraded = None
        if sync:
            self.stats["fsyncs"] += 1
            if self._m_fsync is not None:
                self._m_fsync.observe(time.perf_counter() - t0)

    def _submit_write_back(self, batch: WriteBatch) -> asyncio.Future[None]:
        """Start an unsynced write of the write-back buffer: on its own thread with
        ``write_back_thread`` (at most one runs: the host keeps one in flight), else on
        the writer thread."""
        if not self.write_back_thread:
            return self._submit(batch, False)
        if self._wb_writer is None:
            self._wb_writer = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="atoll-raft-write-back"
            )
        return asyncio.wrap_future(self._wb_writer.submit(self.engine.write, batch, sync=False))

    def _submit(self, batch: WriteBatch, sync: bool) -> asyncio.Future[None]:
        """Start ``engine.write(batch)`` on the writer thread (writes run in order)."""
        if self._writer is None:
            self._writer = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="atoll-raft-write"
            )
        return asyncio.wrap_future(self._writer.submit(self.engine.write, batch, sync=sync))

    async def _send_all(self, msgs: Sequence[Message]) -> None:
        for peer, ms in by_peer(msgs).items():
            await self._send_peer(peer, ms)

    async def _send_peer(self, peer: str, msgs: list[Message]) -> None:
        address = self.resolve(peer)
        if address is None:
            self._unreachable(peer, msgs)
            return
        try:
            await self.transport.send(address, encode_batch(msgs))
        except (TransportError, OSError) as exc:
            log.debug("send to %s (%s) failed: %r", peer, address, exc)
            self._unreachable(peer, msgs)
            return
        self.stats["frames_sent"] += 1
        self.stats["messages_sent"] += len(msgs)

    def _unreachable(self, peer: str, msgs: list[Message]) -> None:
        self.stats["messages_dropped"] += len(msgs)
        for gid in {m.group_id for m in msgs}:
            g = self.groups.get(gid)
            if g is not None:
                g.node.report_unreachable(peer)

    async def close(self) -> None:
        """Stop the loop and fail waiting requests."""
        self._closed = True
        self.wake()
        bg = self._bg
        if bg is not None:
            with contextlib.suppress(Exception):  # lost applies are rebuilt from the log
                await _finish_shielded(bg.future)
        if self.write_back is not None and self.write_back.unflushed:
            with contextlib.suppress(Exception):  # lost applies are rebuilt from the log
                await self._flush_write_back_once()
            if self._run_ended and self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            if self._run_ended and self._wb_writer is not None:
                self._wb_writer.shutdown(wait=True)
                self._wb_writer = None
        # A snapshot being built reads an engine view: let it finish (bounded by the
        # partition's size) so the engine is never closed under it.
        if self._snaps_building:
            await asyncio.wait(list(self._snaps_building.values()))
        for g in self.groups.values():
            g._fail_all(Unavailable("node is shutting down"))


class _BackgroundWrite:
    """A state-machine write running after its cycle ended."""

    __slots__ = ("applied", "batch", "future")

    def __init__(
        self,
        future: asyncio.Future[None],
        batch: WriteBatch,
        applied: list[tuple[RaftGroup, int]],
    ) -> None:
        self.future = future
        self.batch = batch
        self.applied = applied


async def _finish_shielded(done: asyncio.Future[None]) -> None:
    """Await a write on the writer thread. Like anyio's ``to_thread``, a write that
    started is waited for even if the caller is cancelled, so the engine is never closed
    under it."""
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        with anyio.CancelScope(shield=True):
            await asyncio.wait([done])
        raise
