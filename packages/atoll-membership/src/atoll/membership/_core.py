"""The SWIM membership state machine: pure, deterministic, no IO.

Owns: the member table (alive -> suspect -> dead -> removed, plus left), incarnation
numbers and refutation, infection-style dissemination through the broadcast queue,
probing through :class:`atoll.detection.SwimDetector` (direct, indirect, Lifeguard
nacks, buddy system, dynamic suspicion), gossiped heartbeats judged by
:class:`atoll.detection.PhiAccrualDetector` in phi mode, push-pull anti-entropy, join
with retries and backoff, graceful leave and metadata updates.
Never: imports anyio, asyncio, time, random or socket; reads a clock; sends anything
itself. Time comes in as ``now``, randomness from the injected ``random.Random``;
messages, events and the next wake-up time go out through :meth:`take_output` and
:meth:`next_wakeup` (etcd-raft's ``Ready`` idea).

Inputs: :meth:`receive` (a decoded message and the sender's address), :meth:`tick`
(time passed), and local requests :meth:`join`, :meth:`leave`,
:meth:`update_metadata`, :meth:`observe_loop_lag`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from atoll.core import MemberInfo, MembershipEvent, MemberState, Rng
from atoll.detection import (
    DetectorMode,
    PhiAccrualDetector,
    ProbeRound,
    ProbeVerdict,
    Suspicion,
    SwimDetector,
)

from ._broadcast import BroadcastQueue
from ._config import MembershipConfig
from ._messages import (
    Ack,
    Alive,
    Dead,
    Gossip,
    Heartbeats,
    Message,
    Nack,
    Ping,
    PingReq,
    Suspect,
    Sync,
    Update,
    wire_size,
)

__all__ = ["MembershipCore", "MembershipStats", "Output"]

_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)
# Timer kinds (ints keep the heap entries small and comparable).
_T_PROBE, _T_PROBE_TIMEOUT, _T_PROBE_END, _T_RELAY_NACK, _T_RELAY_EXPIRE = range(5)
_T_SUSPICION, _T_REAP, _T_GOSSIP, _T_PUSH_PULL, _T_JOIN, _T_HEARTBEAT, _T_PHI = range(5, 12)
_T_RECONNECT = 12
_PING_OVERHEAD = 160  # bytes of a ping/ack/nack before piggybacked updates


@attrs.define
class MembershipStats:
    """Counters a node keeps about its own view; the shell exports them as metrics."""

    probes_sent: int = 0
    probes_failed: int = 0
    probes_inconclusive: int = 0
    """Probes this node did not judge because it stalled itself (Lifeguard)."""
    suspicions_raised: int = 0
    """Times this node moved a member to suspect."""
    suspicions_refuted: int = 0
    """Times a member this node suspected proved alive with a higher incarnation."""
    dead_declared: int = 0
    """Times this node marked a member dead (not: left)."""
    false_dead_detected: int = 0
    """Members this node held dead that later proved alive (false positives)."""
    refutations: int = 0
    """Times this node refuted a suspicion or death notice about itself."""
    messages_sent: int = 0
    messages_received: int = 0
    nacks_sent: int = 0
    verdicts_deferred: int = 0
    """Suspicion deadlines this node let pass unjudged because it had stalled (Lifeguard)."""


@attrs.define
class Output:
    """What the shell must do after an input: send these messages, publish these events."""

    messages: list[tuple[str, Message]] = attrs.field(factory=list)
    events: list[MembershipEvent] = attrs.field(factory=list)


@attrs.define(slots=True, eq=False)
class _Member:
    info: MemberInfo
    since: float
    suspicion: Suspicion | None = None
    heartbeat: int = 0
    dead_since: float = 0.0

    @property
    def state(self) -> MemberState:
        return self.info.state

    @property
    def incarnation(self) -> int:
        return self.info.incarnation


@attrs.define(slots=True, eq=False)
class _Relay:
    requester: str
    seq: int
    nack: bool


class MembershipCore:
    """One node's SWIM membership, driven by messages, ticks and local requests.

    :param local: this node's identity, address and metadata (incarnation and state are
        taken from it; normally 0 and alive).
    :param config: timing, dissemination and size settings; ``config.detection.mode``
        selects the failure detector.
    :param rng: the only source of randomness (seed it to replay a run).
    :param now: the current time, in the same units as every later ``now``.
    """

    def __init__(self, local: MemberInfo, config: MembershipConfig, rng: Rng, now: float) -> None:
        self.config = config
        self.id = local.node_id
        self._rng = rng
        self.mode = config.detection.mode
        self.detector = SwimDetector(config.detection, rng)
        d = config.detection
        self.phi = PhiAccrualDetector(
            threshold=d.phi_threshold,
            window_size=d.phi_window,
            min_std=d.phi_min_std,
            acceptable_pause=d.phi_acceptable_pause,
            first_interval=d.heartbeat_interval,
            distribution=d.phi_distribution,
            max_interval=d.phi_max_interval,
        )
        self.stats = MembershipStats()
        self._queue = BroadcastQueue(config.retransmit_mult, config.max_queue_depth)
        self._members: dict[str, _Member] = {
            self.id: _Member(attrs.evolve(local, state=MemberState.ALIVE), now)
        }
        self._peers: list[str] | None = None  # cached live non-self ids, in table order
        self._live_count = 1
        self._timers: list[tuple[float, int, int, Any]] = []
        self._tseq = 0
        self._seq = 0
        self._probe: ProbeRound | None = None
        self._relays: dict[int, _Relay] = {}
        self._out = Output()
        self.joined = True
        self.join_failed = False
        self._seeds: list[str] = []
        self._join_attempts = 0
        self.leaving = False
        self.leave_spread = False
        self._heartbeat = 0
        self._failed: dict[str, tuple[str, float]] = {}  # id -> (address, declared dead at)
        self._told_dead: dict[str, float] = {}
        rng_u = rng.uniform
        if self.mode is DetectorMode.PHI:
            self._arm(now + rng_u(0, d.heartbeat_interval), _T_HEARTBEAT)
            self._arm(now + d.phi_check_interval, _T_PHI)
        else:
            self._arm(now + rng_u(0, d.probe_interval), _T_PROBE)
        self._arm(now + rng_u(0, config.gossip_interval), _T_GOSSIP)
        if config.push_pull_interval > 0:
            self._arm(now + rng_u(0.5, 1.0) * config.push_pull_interval, _T_PUSH_PULL)
        if config.reconnect_interval > 0:
            self._arm(now + rng_u(0.5, 1.0) * config.reconnect_interval, _T_RECONNECT)

    # ================================================================ public views
    @property
    def local(self) -> MemberInfo:
        """This node as it gossips itself."""
        return self._members[self.id].info

    def member(self, node_id: str) -> MemberInfo | None:
        """What this node knows about ``node_id`` (None if unknown or removed)."""
        m = self._members.get(node_id)
        return m.info if m else None

    def members(self) -> list[MemberInfo]:
        """Every member in the table, this node included, in table order."""
        return [m.info for m in self._members.values()]

    def counts(self) -> dict[MemberState, int]:
        """Members by state."""
        out = dict.fromkeys(MemberState, 0)
        for m in self._members.values():
            out[m.info.state] += 1
        return out

    @property
    def cluster_size(self) -> int:
        """Estimated live cluster size (alive + suspect, this node included)."""
        return self._live_count

    @property
    def queue_depth(self) -> int:
        """Updates waiting to be disseminated."""
        return len(self._queue)

    def next_wakeup(self) -> float | None:
        """The earliest time :meth:`tick` has something to do (None: nothing scheduled)."""
        return self._timers[0][0] if self._timers else None

    def take_output(self) -> Output:
        """Messages to send and events to publish since the last call (and reset them)."""
        out, self._out = self._out, Output()
        return out

    # ================================================================ local requests
    def join(self, seeds: Sequence[str], now: float) -> None:
        """Sync with ``seeds`` (addresses); retry with backoff until one of them replies.

        Any live seed is enough. Our own address in the list is ignored; with no other
        seed this node is the first of its cluster and counts as joined at once.
        """
        me = self.local.address
        self._seeds = [s for s in dict.fromkeys(seeds) if s != me]
        if not self._seeds:
            self.joined = True
            return
        self.joined = False
        self.join_failed = False
        self._join_attempts = 0
        self._join_attempt(now)

    def _join_attempt(self, now: float) -> None:
        self._join_attempts += 1
        msg = self._sync_message(join=True, reply=False)
        for seed in self._seeds:
            self._send(seed, msg)
        cap = self.config.join_backoff_max
        base = min(cap, self.config.join_timeout * 2 ** (self._join_attempts - 1))
        self._arm(now + base * self._rng.uniform(0.75, 1.0), _T_JOIN)

    def leave(self, now: float) -> None:
        """Leave gracefully: tell ``leave_fanout`` members directly and gossip it.

        The node stops probing; it still answers pings until the shell stops it.
        :attr:`leave_spread` becomes true once the leave has been fully retransmitted.
        """
        if self.leaving:
            return
        self.leaving = True
        me = self._members[self.id]
        notice = Dead(self.id, me.incarnation, self.id)
        me.info = attrs.evolve(me.info, state=MemberState.LEFT)
        self._probe = None

        def spread() -> None:
            self.leave_spread = True

        self._queue.push(notice, on_done=spread)
        peers = self._live_peers()
        for pid in self._rng.sample(peers, min(len(peers), self.config.leave_fanout)):
            self._send(self._members[pid].info.address, Gossip(self.id, (notice,)))
        if not peers:
            self.leave_spread = True

    def update_metadata(self, now: float, **fields: Any) -> MemberInfo:
        """Change this node's metadata (zone, rack, host, tags, version, meta_epoch, address).

        The incarnation goes up so the change overrides older gossip everywhere.
        """
        allowed = {"address", "zone", "rack", "host", "tags", "version", "meta_epoch"}
        bad = sorted(set(fields) - allowed)
        if bad:
            raise ValueError(f"cannot update {bad}: accepted fields are {sorted(allowed)}")
        me = self._members[self.id]
        me.info = attrs.evolve(me.info, incarnation=me.incarnation + 1, **fields)
        self._queue.push(Alive(me.info))
        self._event("updated", me.info)
        return me.info

    def observe_loop_lag(self, due: float, ran: float) -> None:
        """The shell's lag sampler: a callback due at ``due`` ran at ``ran``."""
        self.detector.observe_lag(due, ran)

    # ================================================================ timers
    def _arm(self, when: float, kind: int, key: Any = None) -> None:
        self._tseq += 1
        heapq.heappush(self._timers, (when, self._tseq, kind, key))

    def tick(self, now: float) -> None:
        """Run everything due at or before ``now``.

        The lateness of the earliest due timer is itself a loop-lag sample: a node that
        wakes up late knows it was not running, before it judges anyone.
        """
        timers = self._timers
        if not timers or timers[0][0] > now:
            return
        self.detector.observe_lag(timers[0][0], now)
        while timers and timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(timers)
            self._HANDLERS[kind](self, now, key)

    def _t_probe(self, now: float, _key: Any) -> None:
        if self.leaving or self.mode is DetectorMode.PHI:
            return
        probe = self._probe
        if probe is not None:  # still running (a stall restarted it): wait for its end
            self._arm(max(now, probe.end_at), _T_PROBE)
            return
        self._arm(now + self.detector.probe_interval(), _T_PROBE)
        target = self.detector.ring.next()
        if target is None:
            return
        m = self._members.get(target)
        if m is None or m.state not in _LIVE:
            self.detector.ring.remove(target)
            return
        self._seq += 1
        probe = self._probe = self.detector.begin(target, self._seq, now)
        self.stats.probes_sent += 1
        self._send_ping(probe, m)
        self._arm(probe.timeout_at, _T_PROBE_TIMEOUT, probe.seq)
        self._arm(probe.end_at, _T_PROBE_END, probe.seq)

    def _send_ping(self, probe: ProbeRound, m: _Member) -> None:
        buddy: tuple[Update, ...] = ()
        budget = self.config.max_gossip_bytes - _PING_OVERHEAD
        if m.state is MemberState.SUSPECT and self.detector.lifeguard:
            # Buddy system: tell a suspect directly, so it can refute at once.
            s = Suspect(probe.target, m.incarnation, self.id)
            buddy = (s,)
            budget -= s.size + 1
        ups = buddy + tuple(self._queue.take(budget, self._live_count))
        self._send(m.info.address, Ping(self.id, self.local.address, probe.seq, probe.target, ups))

    def _t_probe_timeout(self, now: float, seq: int) -> None:
        probe = self._probe
        if probe is None or probe.seq != seq or probe.acked or probe.indirect_sent:
            return
        if probe.timeout_at > now:
            return  # restarted; a later timer is armed
        m = self._members.get(probe.target)
        if m is None or m.state not in _LIVE:
            self._probe = None
            return
        if self.detector.stalled_during(probe) and probe.restarts < 2:
            self._restart_probe(probe, m, now)
            return
        helpers = [p for p in self._live_peers() if p != probe.target]
        k = min(len(helpers), self.config.detection.indirect_checks)
        chosen = self._rng.sample(helpers, k)
        nack = self.detector.lifeguard
        for hid in chosen:
            ups = tuple(self._queue.take(self.config.max_gossip_bytes - 2 * _PING_OVERHEAD,
                                         self._live_count))  # fmt: skip
            req = PingReq(self.id, self.local.address, seq, probe.target, m.info.address, nack, ups)
            self._send(self._members[hid].info.address, req)
        self.detector.go_indirect(probe, k)

    def _restart_probe(self, probe: ProbeRound, m: _Member, now: float) -> None:
        self.stats.probes_inconclusive += 1
        self.detector.restart(probe, now)
        self._send_ping(probe, m)
        self._arm(probe.timeout_at, _T_PROBE_TIMEOUT, probe.seq)
        self._arm(probe.end_at, _T_PROBE_END, probe.seq)

    def _t_probe_end(self, now: float, seq: int) -> None:
        probe = self._probe
        if probe is None or probe.seq != seq or probe.end_at > now:
            return
        if probe.acked:
            self._probe = None
            return
        m = self._members.get(probe.target)
        if m is None or m.state not in _LIVE:
            self._probe = None
            return
        verdict = self.detector.conclude(probe)
        if verdict is ProbeVerdict.INCONCLUSIVE and probe.restarts < 2:
            self._restart_probe(probe, m, now)
            return
        self._probe = None
        if verdict is ProbeVerdict.ACKED:
            return
        self.stats.probes_failed += 1
        self._on_suspect(Suspect(probe.target, m.incarnation, self.id), now)

    def _t_relay_nack(self, now: float, seq: int) -> None:
        relay = self._relays.get(seq)
        if relay is not None and relay.nack:
            self.stats.nacks_sent += 1
            self._send(relay.requester, Nack(self.id, relay.seq, tuple(self._piggyback())))

    def _t_relay_expire(self, now: float, seq: int) -> None:
        self._relays.pop(seq, None)

    def _t_suspicion(self, now: float, node_id: str) -> None:
        m = self._members.get(node_id)
        if m is None or m.state is not MemberState.SUSPECT or m.suspicion is None:
            return
        if m.suspicion.deadline > now + 1e-9:
            return  # a confirmation moved the deadline; its own timer is armed
        if self.detector.defer_verdict(m.suspicion, now):
            # Lifeguard: we were stalled when this deadline passed; the refutation may be
            # sitting unread in our own backlog. Read it before we judge anyone.
            self.stats.verdicts_deferred += 1
            self._arm(m.suspicion.deadline, _T_SUSPICION, node_id)
            return
        self._on_dead(Dead(node_id, m.incarnation, self.id), now)

    def _t_reap(self, now: float, node_id: str) -> None:
        m = self._members.get(node_id)
        if m is None or m.state in _LIVE or node_id == self.id:
            return
        if now + 1e-9 < m.dead_since + self.config.dead_reclaim:
            return
        del self._members[node_id]
        self.phi.remove(node_id)
        self._event("removed", m.info)

    def _t_gossip(self, now: float, _key: Any) -> None:
        cfg = self.config
        self._arm(now + cfg.gossip_interval, _T_GOSSIP)
        if not len(self._queue) or cfg.gossip_nodes == 0:
            return
        targets = self._live_peers()
        chosen = self._rng.sample(targets, min(len(targets), cfg.gossip_nodes))
        # Keep telling recently dead members, so a false positive hears it and refutes.
        horizon = now - cfg.gossip_to_dead
        dead = [
            m for m in self._members.values()
            if m.state is MemberState.DEAD and m.dead_since >= horizon
        ]  # fmt: skip
        if dead and len(chosen) < cfg.gossip_nodes + 1:
            chosen.append(self._rng.choice(dead).info.node_id)
        for nid in chosen:
            ups = self._queue.take(cfg.max_gossip_bytes - 60, self._live_count)
            if not ups:
                break
            self._send(self._members[nid].info.address, Gossip(self.id, tuple(ups)))

    def _t_push_pull(self, now: float, _key: Any) -> None:
        cfg = self.config
        n = self._live_count
        scale = 1.0 if n <= 32 else math.ceil(math.log2(n) - math.log2(32)) + 1.0
        self._arm(now + cfg.push_pull_interval * scale * self._rng.uniform(0.9, 1.1), _T_PUSH_PULL)
        peers = self._live_peers()
        if peers and not self.leaving:
            target = self._members[self._rng.choice(peers)].info.address
            self._send(target, self._sync_message(join=False, reply=False))

    def _t_reconnect(self, now: float, _key: Any) -> None:
        cfg = self.config
        self._arm(now + cfg.reconnect_interval * self._rng.uniform(0.9, 1.1), _T_RECONNECT)
        horizon = now - cfg.reconnect_timeout
        for nid in [n for n, (_a, t) in self._failed.items() if t < horizon]:
            del self._failed[nid]
        if not self._failed or self.leaving:
            return
        nid = self._rng.choice(sorted(self._failed))
        self._send(self._failed[nid][0], self._sync_message(join=False, reply=False))

    def _t_join(self, now: float, _key: Any) -> None:
        if self.joined or self.join_failed:
            return
        limit = self.config.join_max_attempts
        if limit and self._join_attempts >= limit:
            self.join_failed = True
            return
        self._join_attempt(now)

    def _t_heartbeat(self, now: float, _key: Any) -> None:
        d = self.config.detection
        self._arm(now + d.heartbeat_interval, _T_HEARTBEAT)
        if self.leaving:
            return
        self._heartbeat += 1
        me = self._members[self.id]
        me.heartbeat = self._heartbeat
        peers = self._live_peers()
        if not peers:
            return
        beats = self._beats()
        for pid in self._rng.sample(peers, min(len(peers), d.heartbeat_fanout)):
            msg = Heartbeats(self.id, me.info.address, beats, tuple(self._piggyback()))
            self._send(self._members[pid].info.address, msg)

    def _beats(self) -> tuple[tuple[str, int], ...]:
        return tuple(
            (nid, m.heartbeat)
            for nid, m in self._members.items()
            if m.state is not MemberState.LEFT
        )

    def _t_phi(self, now: float, _key: Any) -> None:
        self._arm(now + self.config.detection.phi_check_interval, _T_PHI)
        phi = self.phi
        quiet = phi.min_silence()
        for nid, m in list(self._members.items()):
            if nid == self.id or m.state is not MemberState.ALIVE:
                continue
            w = phi.window(nid)
            if w is None or w.last_arrival is None or now - w.last_arrival < quiet:
                continue
            if not phi.is_available(nid, now):
                # Phi convicts locally (Cassandra): the verdict is not gossiped.
                self._mark_dead(m, MemberState.DEAD, m.incarnation, now)

    _HANDLERS: Any = {}

    # ================================================================ messages
    def receive(self, src: str, msg: Message, now: float) -> None:
        """Handle a decoded message that arrived from address ``src``."""
        self.stats.messages_received += 1
        sender = self._members.get(msg.sender)
        if sender is not None and sender.state is MemberState.DEAD:
            if self.mode is DetectorMode.PHI:
                self._revive(sender, now)  # a message from it is proof of life
            else:
                self._tell_dead(sender, src, now)
        if self.joined is False and isinstance(msg, Sync) and msg.reply:
            self.joined = True
        if isinstance(msg, Sync):
            self._merge(msg, now)
            if not msg.reply:
                self._send(msg.reply_to, self._sync_message(join=False, reply=True))
            return
        for u in msg.updates:
            self._apply(u, now)
        if isinstance(msg, Ping):
            if msg.target == self.id:
                self._send(msg.reply_to, Ack(self.id, msg.seq, tuple(self._piggyback())))
        elif isinstance(msg, Ack):
            probe = self._probe
            if probe is not None and probe.seq == msg.seq:
                self.detector.on_ack(probe)
                return
            relay = self._relays.pop(msg.seq, None)
            if relay is not None:
                self._send(relay.requester, Ack(self.id, relay.seq, tuple(self._piggyback())))
        elif isinstance(msg, Nack):
            probe = self._probe
            if probe is not None and probe.seq == msg.seq:
                self.detector.on_nack(probe)
        elif isinstance(msg, PingReq):
            self._seq += 1
            self._relays[self._seq] = _Relay(msg.reply_to, msg.seq, msg.nack)
            ups = tuple(self._piggyback())
            self._send(msg.target_address, Ping(self.id, self.local.address, self._seq,
                                                msg.target, ups))  # fmt: skip
            if msg.nack:
                self._arm(now + self.detector.nack_timeout(), _T_RELAY_NACK, self._seq)
            self._arm(now + self.detector.probe_interval(), _T_RELAY_EXPIRE, self._seq)
        elif isinstance(msg, Heartbeats):
            self._on_heartbeats(msg, now)
            if not msg.reply:
                # Cassandra's exchange is push-pull: answer with our own digest.
                reply = Heartbeats(self.id, self.local.address, self._beats(),
                                   tuple(self._piggyback()), reply=True)  # fmt: skip
                self._send(msg.reply_to, reply)

    def _on_heartbeats(self, msg: Heartbeats, now: float) -> None:
        members = self._members
        for nid, hb in msg.beats:
            m = members.get(nid)
            if m is None or nid == self.id or hb <= m.heartbeat:
                continue
            m.heartbeat = hb
            self.phi.heartbeat(nid, now)
            if m.state is MemberState.DEAD:
                self._revive(m, now)

    def _revive(self, m: _Member, now: float) -> None:
        # Phi mode: convicted, yet still beating — a false positive of phi.
        self.stats.false_dead_detected += 1
        m.info = attrs.evolve(m.info, state=MemberState.ALIVE)
        m.since = now
        self._failed.pop(m.info.node_id, None)
        self.phi.heartbeat(m.info.node_id, now)
        self._table_changed()
        self._event("alive", m.info)

    def _tell_dead(self, m: _Member, src: str, now: float) -> None:
        # A member we hold dead is talking to us: tell it, so it refutes with a higher
        # incarnation right away instead of waiting for anti-entropy (partition healing).
        nid = m.info.node_id
        if now - self._told_dead.get(nid, -math.inf) < self.config.detection.probe_interval:
            return
        self._told_dead[nid] = now
        self._send(src, Gossip(self.id, (Dead(nid, m.incarnation, self.id),)))

    def _sync_message(self, *, join: bool, reply: bool) -> Sync:
        members = tuple(m.info for m in self._members.values())
        msg = Sync(self.id, self.local.address, members, join, reply)
        if wire_size(msg) > self.config.max_sync_bytes:
            # Keep the message bounded: live members first, as many as fit.
            live = [m for m in members if m.state in _LIVE]
            keep = max(1, int(len(live) * self.config.max_sync_bytes / wire_size(msg)))
            msg = Sync(self.id, self.local.address, tuple(live[:keep]), join, reply)
        return msg

    def _merge(self, msg: Sync, now: float) -> None:
        for info in msg.members:
            st = info.state
            if st is MemberState.ALIVE:
                self._on_alive(info, now)
            elif st is MemberState.LEFT:
                self._on_dead(Dead(info.node_id, info.incarnation, info.node_id), now)
            else:
                # memberlist's rule: a remote "dead" only makes us suspect, so the member
                # still gets its chance to refute.
                self._on_suspect(Suspect(info.node_id, info.incarnation, msg.sender), now)

    # ================================================================ updates
    def _apply(self, u: Update, now: float) -> None:
        if isinstance(u, Alive):
            self._on_alive(u.member, now)
        elif isinstance(u, Suspect):
            self._on_suspect(u, now)
        else:
            self._on_dead(u, now)

    def _refute(self, incarnation: int) -> None:
        me = self._members[self.id]
        me.info = attrs.evolve(me.info, incarnation=max(incarnation, me.incarnation) + 1)
        self.stats.refutations += 1
        self.detector.on_refute()
        self._queue.push(Alive(me.info))

    def _on_alive(self, info: MemberInfo, now: float) -> None:
        nid = info.node_id
        if nid == self.id:
            me = self._members[nid]
            if info.incarnation > me.incarnation and not self.leaving:
                self._refute(info.incarnation)  # someone holds a newer "us": out-bid it
            return
        m = self._members.get(nid)
        info = (
            info if info.state is MemberState.ALIVE else attrs.evolve(info, state=MemberState.ALIVE)
        )
        if m is None:
            self._members[nid] = _Member(info, now)
            self._failed.pop(nid, None)
            self._table_changed()
            if self.mode is not DetectorMode.PHI:
                self.detector.ring.add(nid)
            else:
                self.phi.heartbeat(nid, now)
            self._queue.push(Alive(info))
            self._event("joined", info)
            return
        if info.incarnation <= m.incarnation:
            return
        was = m.state
        old = m.info
        m.info = info
        m.since = now
        m.suspicion = None
        if was not in _LIVE:
            self._table_changed()
            if self.mode is not DetectorMode.PHI:
                self.detector.ring.add(nid)
            else:
                self.phi.heartbeat(nid, now)
        elif was is MemberState.SUSPECT:
            self._table_changed()
        self._queue.push(Alive(info))
        self._failed.pop(nid, None)
        self._told_dead.pop(nid, None)
        if was is MemberState.DEAD:
            self.stats.false_dead_detected += 1
            self._event("alive", info)
        elif was is MemberState.LEFT:
            self._event("joined", info)
        elif was is MemberState.SUSPECT:
            self.stats.suspicions_refuted += 1
            self._event("alive", info)
        if was in _LIVE and _meta(old) != _meta(info):
            self._event("updated", info)

    def _on_suspect(self, s: Suspect, now: float) -> None:
        m = self._members.get(s.node_id)
        if m is None or s.incarnation < m.incarnation or m.state not in _LIVE:
            return
        if s.node_id == self.id:
            if not self.leaving:
                self._refute(s.incarnation)
            return
        if self.mode is DetectorMode.PHI:
            return  # phi mode convicts locally; gossiped suspicions are only refuted
        if m.state is MemberState.SUSPECT and m.suspicion is not None:
            if s.incarnation == m.incarnation and m.suspicion.confirm(s.by):
                # An independent confirmation: shorten the deadline and pass it on.
                self._arm(m.suspicion.deadline, _T_SUSPICION, s.node_id)
                self._queue.push(s)
            return
        m.info = attrs.evolve(m.info, state=MemberState.SUSPECT, incarnation=s.incarnation)
        m.since = now
        m.suspicion = self.detector.new_suspicion(now, self._live_count, s.by)
        self._arm(m.suspicion.deadline, _T_SUSPICION, s.node_id)
        self.stats.suspicions_raised += 1
        self._table_changed()
        self._queue.push(s)
        self._event("suspect", m.info)

    def _on_dead(self, d: Dead, now: float) -> None:
        m = self._members.get(d.node_id)
        if m is None or d.incarnation < m.incarnation or m.state not in _LIVE:
            return
        if d.node_id == self.id:
            if not self.leaving:
                self._refute(d.incarnation)
            return
        self._queue.push(d)
        self._mark_dead(m, MemberState.LEFT if d.is_leave else MemberState.DEAD, d.incarnation, now)

    def _mark_dead(self, m: _Member, state: MemberState, incarnation: int, now: float) -> None:
        m.info = attrs.evolve(m.info, state=state, incarnation=incarnation)
        m.since = m.dead_since = now
        m.suspicion = None
        nid = m.info.node_id
        self.detector.ring.remove(nid)
        if self._probe is not None and self._probe.target == nid:
            self._probe = None
        self._table_changed()
        self._arm(now + self.config.dead_reclaim, _T_REAP, nid)
        if state is MemberState.DEAD:
            self.stats.dead_declared += 1
            self._failed[nid] = (m.info.address, now)
        self._event(state.value, m.info)

    # ================================================================ helpers
    def _table_changed(self) -> None:
        self._peers = None
        self._live_count = sum(1 for m in self._members.values() if m.state in _LIVE)

    def _live_peers(self) -> list[str]:
        if self._peers is None:
            me = self.id
            self._peers = [
                nid for nid, m in self._members.items() if nid != me and m.state in _LIVE
            ]
        return self._peers

    def _piggyback(self) -> list[Update]:
        return self._queue.take(self.config.max_gossip_bytes - _PING_OVERHEAD, self._live_count)

    def _send(self, address: str, msg: Message) -> None:
        self.stats.messages_sent += 1
        self._out.messages.append((address, msg))

    def _event(self, kind: str, info: MemberInfo) -> None:
        self._out.events.append(MembershipEvent(kind, info))

    def bootstrap(self, members: Iterable[MemberInfo], now: float) -> None:
        """Seed the table with known-alive members without gossiping them.

        For simulations and tests that start from a converged cluster; a real node
        joins through :meth:`join`.
        """
        for info in members:
            if info.node_id == self.id or info.node_id in self._members:
                continue
            self._members[info.node_id] = _Member(info, now)
            if self.mode is DetectorMode.PHI:
                self.phi.heartbeat(info.node_id, now)
            else:
                self.detector.ring.add(info.node_id)
        self._table_changed()


def _meta(m: MemberInfo) -> tuple[Any, ...]:
    return (m.address, m.zone, m.rack, m.host, m.tags, m.version, m.meta_epoch)


MembershipCore._HANDLERS = {
    _T_PROBE: MembershipCore._t_probe,
    _T_PROBE_TIMEOUT: MembershipCore._t_probe_timeout,
    _T_PROBE_END: MembershipCore._t_probe_end,
    _T_RELAY_NACK: MembershipCore._t_relay_nack,
    _T_RELAY_EXPIRE: MembershipCore._t_relay_expire,
    _T_SUSPICION: MembershipCore._t_suspicion,
    _T_REAP: MembershipCore._t_reap,
    _T_GOSSIP: MembershipCore._t_gossip,
    _T_PUSH_PULL: MembershipCore._t_push_pull,
    _T_JOIN: MembershipCore._t_join,
    _T_HEARTBEAT: MembershipCore._t_heartbeat,
    _T_PHI: MembershipCore._t_phi,
    _T_RECONNECT: MembershipCore._t_reconnect,
}
