"""A simulated Raft cluster on atoll.testing's scheduler and faulty network.

Every node runs the shell loop a real host runs: take a Ready, send its ``messages`` at
once, persist after a random disk latency, then send ``messages_after_persist``, apply
and advance. A crash loses the Ready being persisted (and everything in memory) and
keeps exactly what reached the node's disk. ``SafetyChecker`` verifies Raft's safety
properties on every log change, every election and every apply.
"""

from __future__ import annotations

import collections
from typing import Any

from raft_harness import Peer, bootstrap

from atoll.core import AtollError
from atoll.replication import (
    ConfChange,
    ConfChangeOp,
    ConfChangeType,
    Entry,
    MemoryLogStorage,
    Message,
    ProposalTicket,
    Ready,
    Role,
)
from atoll.testing import LinkFaults, Scheduler, SimNetwork

TICK = 0.01


class SafetyViolation(AssertionError):
    """A Raft safety property was broken."""


class SafetyChecker:
    """Global registries that every node's behaviour must agree with."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        self.entries: dict[tuple[int, int], tuple[bytes, int]] = {}
        self.committed: dict[int, int] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}
        self.max_applied = 0

    def on_leader(self, node: str, term: int, peer: Peer) -> None:
        # Election safety: at most one leader per term.
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise SafetyViolation(f"election safety: {other} and {node} both lead term {term}")
        # Leader completeness: the new leader holds every committed entry.
        log = peer.raft.log
        first = log.first_index()
        for i, t in self.committed.items():
            if i >= first and log.term(i) != t:
                raise SafetyViolation(
                    f"leader completeness: {node} leads term {term} but has term "
                    f"{log.term(i)} at committed index {i} (committed term {t})"
                )
            if i > log.last_index():
                raise SafetyViolation(
                    f"leader completeness: {node} leads term {term} with last index "
                    f"{log.last_index()} < committed index {i}"
                )

    def on_entries(self, node: str, peer: Peer, entries: tuple[Entry, ...]) -> None:
        # Log matching: an (index, term) pair names one entry with one predecessor term,
        # which by induction makes logs identical up to any shared (index, term).
        log = peer.raft.log
        for e in entries:
            prev = log.term(e.index - 1)
            if prev is None:
                prev = -1  # compacted predecessor: the snapshot vouches for it
            key = (e.index, e.term)
            known = self.entries.get(key)
            if known is None:
                self.entries[key] = (e.data, prev)
            elif known[0] != e.data or (prev != -1 and known[1] != -1 and known[1] != prev):
                raise SafetyViolation(
                    f"log matching: {node} holds a different entry at index {e.index} term {e.term}"
                )
            c = self.committed.get(e.index)
            if c is not None and c != e.term and e.index <= peer.raft.commit_index:
                raise SafetyViolation(
                    f"{node} commits term {e.term} at index {e.index}, committed was term {c}"
                )

    def on_apply(self, node: str, e: Entry, digest: bytes) -> None:
        # State machine safety: every node applies the same entry at each index.
        known = self.applied.setdefault(e.index, (e.term, digest))
        if known != (e.term, digest):
            raise SafetyViolation(
                f"state machine safety: {node} applied term {e.term} at index {e.index}, "
                f"another node applied term {known[0]} (digests differ: {known[1] != digest})"
            )
        c = self.committed.setdefault(e.index, e.term)
        if c != e.term:
            raise SafetyViolation(f"{node} applied term {e.term} at {e.index}, committed {c}")
        self.max_applied = max(self.max_applied, e.index)


class SimNode:
    """One simulated process: its disk survives crashes, everything else does not."""

    def __init__(self, cluster: SimCluster, node_id: str, disk: MemoryLogStorage) -> None:
        self.cluster = cluster
        self.id = node_id
        self.disk = disk
        self.peer: Peer | None = None
        self.incarnation = 0
        self.busy = False
        self.stop_ticks: Any = None

    @property
    def up(self) -> bool:
        return self.peer is not None

    def start(self) -> None:
        c = self.cluster
        self.incarnation += 1
        self.busy = False
        self.peer = Peer(
            self.id,
            self.disk,
            seed=c.sched.rng.getrandbits(32),
            clock=c.sched.clock,
            **c.raft_cfg,
        )
        self.peer.on_apply = lambda p, e: c.checker.on_apply(p.id, e, p.kv.digest)
        inc = self.incarnation
        c.net.register(self.id, lambda src, m: self.deliver(inc, m))
        self.stop_ticks = c.sched.call_every(TICK, lambda: self.tick(inc), jitter=TICK * 0.2)
        c.trace(f"{self.id} start (term {self.peer.raft.term})")

    def crash(self) -> None:
        if self.peer is None:
            return
        self.cluster.trace(f"{self.id} CRASH")
        self.peer = None
        self.cluster.net.unregister(self.id)
        if self.stop_ticks is not None:
            self.stop_ticks()

    def deliver(self, inc: int, m: Message) -> None:
        if inc != self.incarnation or self.peer is None:
            return
        self.peer.raft.step(m)
        self.pump()

    def tick(self, inc: int) -> None:
        if inc != self.incarnation or self.peer is None:
            return
        self.peer.raft.tick()
        self.pump()

    def pump(self) -> None:
        p = self.peer
        if p is None or self.busy or not p.raft.has_ready():
            return
        c = self.cluster
        rd = p.raft.ready()
        c.checker.on_entries(self.id, p, rd.entries)
        for m in rd.messages:
            c.net.send(self.id, m.dst, m)
        self.busy = True
        c.sched.call_later(c.rng.uniform(*c.disk_latency), self.finish, self.incarnation, rd)

    def finish(self, inc: int, rd: Ready) -> None:
        p = self.peer
        if inc != self.incarnation or p is None:
            return  # crashed while persisting: this Ready never reached the disk
        c = self.cluster
        was_leader = p.raft.role is Role.LEADER
        for m in p.handle(rd):
            if m in rd.messages_after_persist:
                c.net.send(self.id, m.dst, m)
        self.busy = False
        for ev in rd.events:
            c.trace(f"{self.id} {ev}")
        if p.raft.role is Role.LEADER and not was_leader:
            c.checker.on_leader(self.id, p.raft.term, p)
        c.check_reads(self, rd)
        self.pump()


class SimCluster:
    """N simulated nodes, a fault schedule, clients, and the safety checker."""

    def __init__(
        self,
        seed: int,
        *,
        voters: int = 3,
        spares: int = 2,
        faults: LinkFaults | None = None,
        **raft_cfg: Any,
    ) -> None:
        self.seed = seed
        self.sched = Scheduler(seed)
        self.rng = self.sched.fork_rng()
        self.net = SimNetwork(self.sched, faults or LinkFaults())
        self.checker = SafetyChecker()
        self.log: collections.deque[str] = collections.deque(maxlen=60)
        self.idle_until = 0.0
        self.quiesces = 0
        raft_cfg.setdefault("tick_seconds", TICK)
        raft_cfg.setdefault("max_clock_drift", TICK)
        raft_cfg.setdefault("forward_proposals", False)
        raft_cfg.setdefault("snapshot_interval_entries", 25)
        raft_cfg.setdefault("snapshot_chunk_bytes", 64)
        raft_cfg.setdefault("max_msg_bytes", 256)
        raft_cfg.setdefault("max_inflight_msgs", 4)
        self.raft_cfg = raft_cfg
        ids = [f"n{i}" for i in range(1, voters + spares + 1)]
        self.voter_ids = ids[:voters]
        self.nodes: dict[str, SimNode] = {}
        for n in ids:
            disk = bootstrap(self.voter_ids) if n in self.voter_ids else MemoryLogStorage()
            self.nodes[n] = SimNode(self, n, disk)
        self.tickets: list[tuple[str, ProposalTicket]] = []
        self.refused = 0
        self.reads: dict[bytes, int] = {}
        self.reads_ok = 0
        self.next_key = 0
        self.next_read = 0
        self.crashed_max = (voters - 1) // 2
        # Per-seed knobs: fsync latency (a slow disk widens the crash window between
        # sending a leader's appends and persisting them) and how often faults strike.
        self.disk_latency = self.rng.choice([(0.0002, 0.003), (0.001, 0.03)])
        self.fault_every = self.rng.choice([0.25, 0.1, 0.05])
        # Half the seeds run as the node host does: commit learnt from appends/heartbeats.
        self.raft_cfg.setdefault("commit_broadcast", self.rng.random() < 0.5)
        self.raft_cfg.setdefault("heartbeat_piggyback", self.rng.random() < 0.5)
        for node in self.nodes.values():
            node.start()

    # -- helpers -------------------------------------------------------------------

    def trace(self, line: str) -> None:
        self.log.append(f"{self.sched.now():8.3f} {line}")

    def leader(self) -> SimNode | None:
        best: SimNode | None = None
        for n in self.nodes.values():
            if (
                n.peer is not None
                and n.peer.raft.role is Role.LEADER
                and (best is None or best.peer is None or n.peer.raft.term > best.peer.raft.term)
            ):
                best = n
        return best

    def check_reads(self, node: SimNode, rd: Ready) -> None:
        p = node.peer
        assert p is not None
        for rs in rd.read_states:
            floor = self.reads.pop(rs.context, None)
            if floor is None:
                continue
            # Linearizability of reads: the read index covers every write that any
            # replica had applied (so could have acknowledged) before the read began.
            if rs.index < floor:
                raise SafetyViolation(
                    f"stale read on {node.id}: read index {rs.index} < {floor} applied "
                    "before the read started"
                )
            self.reads_ok += 1

    # -- client and operator actions -----------------------------------------------

    def clients_idle(self) -> bool:
        """Clients go quiet for random stretches, so groups get the chance to quiesce."""
        now = self.sched.now()
        if now >= self.idle_until and self.rng.random() < 0.01:
            self.idle_until = now + self.rng.uniform(0.2, 1.0)
            self.trace(f"clients idle until {self.idle_until:.3f}")
        return now < self.idle_until

    def propose(self) -> None:
        if self.clients_idle():
            return
        ld = self.leader()
        if ld is None or ld.peer is None:
            return
        self.next_key += 1
        data = f"k{self.next_key % 17}=v{self.next_key}".encode()
        try:
            t = ld.peer.raft.propose(data)
        except AtollError:
            self.refused += 1
            return
        if t is not None:
            self.tickets.append((ld.id, t))
        ld.pump()

    def read(self) -> None:
        if self.clients_idle():
            return
        ld = self.leader()
        if ld is None or ld.peer is None:
            return
        self.next_read += 1
        ctx = f"r{self.next_read}".encode()
        self.reads[ctx] = self.checker.max_applied
        try:
            ld.peer.raft.read_index(ctx, lease=self.rng.random() < 0.5)
        except AtollError:
            self.reads.pop(ctx, None)
        ld.pump()

    def random_fault(self) -> None:
        r = self.rng.random()
        up = [n for n in self.nodes.values() if n.up]
        down = [n for n in self.nodes.values() if not n.up]
        if r < 0.2:
            ids = list(self.nodes)
            self.rng.shuffle(ids)
            cut = self.rng.randint(1, len(ids) - 1)
            self.trace(f"partition {ids[:cut]} | {ids[cut:]}")
            self.net.heal()
            self.net.partition([ids[:cut], ids[cut:]])
        elif r < 0.35:
            self.trace("heal")
            self.net.heal()
        elif r < 0.5 and len(down) < self.crashed_max + 1 and up:
            self.rng.choice(up).crash()
        elif r < 0.65 and down:
            self.rng.choice(down).start()
        elif r < 0.8:
            ld = self.leader()
            if ld is not None and ld.peer is not None:
                voters = sorted(ld.peer.raft.tracker.voters - {ld.id})
                if voters:
                    target = self.rng.choice(voters)
                    self.trace(f"transfer {ld.id} -> {target}")
                    try:
                        ld.peer.raft.transfer_leadership(target)
                    except AtollError:
                        pass
                    ld.pump()
        else:
            self.random_conf_change()

    def random_conf_change(self) -> None:
        ld = self.leader()
        if ld is None or ld.peer is None:
            return
        cs = ld.peer.raft.conf_state
        if cs.is_joint:
            return
        voters = sorted(cs.voters)
        others = sorted(set(self.nodes) - cs.voters - cs.learners)
        learners = sorted(cs.learners)
        r = self.rng.random()
        ops: tuple[ConfChangeOp, ...]
        if r < 0.3 and others:
            ops = (ConfChangeOp(ConfChangeType.ADD_LEARNER_AUTO_PROMOTE, self.rng.choice(others)),)
        elif r < 0.55 and others and len(voters) >= 3:
            # Replace a voter: two voter changes at once, i.e. joint consensus.
            out = self.rng.choice([v for v in voters if v != ld.id] or voters)
            ops = (
                ConfChangeOp(ConfChangeType.REMOVE_NODE, out),
                ConfChangeOp(ConfChangeType.ADD_VOTER, self.rng.choice(others)),
            )
        elif r < 0.75 and len(voters) > 3:
            ops = (ConfChangeOp(ConfChangeType.REMOVE_NODE, self.rng.choice(voters)),)
        elif learners:
            ops = (ConfChangeOp(ConfChangeType.ADD_VOTER, self.rng.choice(learners)),)
        elif others:
            ops = (ConfChangeOp(ConfChangeType.ADD_VOTER, self.rng.choice(others)),)
        else:
            return
        self.trace(f"conf change at {ld.id}: {ops}")
        try:
            ld.peer.raft.propose_conf_change(ConfChange(ops))
        except AtollError as exc:
            self.trace(f"  refused: {exc}")
        ld.pump()

    def message_faults(self, faults: LinkFaults) -> None:
        self.net.default = faults

    # -- phases ------------------------------------------------------------------------

    def try_quiesce(self) -> None:
        """Idle leaders put their group to sleep (the host does this after idle ticks)."""
        ld = self.leader()
        if ld is not None and ld.peer is not None and ld.peer.raft.maybe_quiesce():
            self.quiesces += 1
            self.trace(f"quiesce {ld.id} term {ld.peer.raft.term}")
            ld.pump()

    def failure_detector(self) -> None:
        """Wake sleeping members whose leader is down or cut off from them, as the
        membership failure detector does in a node (with its detection delay)."""
        for n in self.nodes.values():
            if not n.up or n.peer is None or not n.peer.raft.quiesced:
                continue
            lead = n.peer.raft.leader_id
            ln = self.nodes.get(lead) if lead is not None else None
            if (
                ln is None
                or not ln.up
                or self.net.link(ln.id, n.id).blocked
                or self.net.link(n.id, ln.id).blocked
            ):
                self.trace(f"fd wakes {n.id} (leader {lead})")
                n.peer.raft.unquiesce()
                n.pump()

    def run_chaos(self, duration: float) -> None:
        stops = [
            self.sched.call_every(0.02, self.propose, jitter=0.02),
            self.sched.call_every(0.05, self.read, jitter=0.05),
            self.sched.call_every(0.15, self.try_quiesce, jitter=0.15),
            self.sched.call_every(0.3, self.failure_detector, jitter=0.2),
            self.sched.call_every(self.fault_every, self.random_fault, jitter=self.fault_every),
        ]
        self.sched.run_for(duration)
        for s in stops:
            s()

    def heal_all(self) -> None:
        self.trace("HEAL ALL")
        self.net.heal()
        self.net.clear_faults()
        self.net.default = LinkFaults()
        for n in self.nodes.values():
            if not n.up:
                n.start()

    def wait_for(self, what: str, pred: Any, timeout: float) -> None:
        if not self.sched.run_until_true(pred, timeout=timeout):
            raise AssertionError(f"liveness: {what} within {timeout}s of virtual time")

    def members(self) -> list[SimNode]:
        ld = self.leader()
        assert ld is not None and ld.peer is not None
        return [self.nodes[n] for n in sorted(ld.peer.raft.conf_state.members)]

    def check_liveness(self) -> None:
        self.wait_for("a leader is elected after healing", lambda: self.leader() is not None, 5.0)
        # A fresh proposal commits, and every member converges on the same state.
        final: list[ProposalTicket] = []
        owner: list[tuple[str, int]] = []

        def propose_final() -> bool:
            ld = self.leader()
            if ld is None or ld.peer is None:
                return False
            if final:
                t = final[0]
                got = self.checker.applied.get(t.index)
                if got is not None:
                    if got[0] == t.term:
                        return True
                    final.clear()  # overwritten by a later leader: propose again
                elif owner[0] != (ld.id, ld.peer.raft.term):
                    final.clear()  # its leader is gone; it may never commit
            if not final:
                try:
                    t = ld.peer.raft.propose(b"final=1")
                except AtollError:
                    return False
                assert t is not None
                final[:] = [t]
                owner[:] = [(ld.id, ld.peer.raft.term)]
                ld.pump()
            return False

        self.wait_for("a proposal after healing commits", propose_final, 10.0)

        def converged() -> bool:
            ld = self.leader()
            if ld is None or ld.peer is None:
                return False
            target = ld.peer.raft.commit_index
            return all(n.peer is not None and n.peer.kv.index >= target for n in self.members())

        self.wait_for("every member applies everything", converged, 10.0)
        # Every proposal has resolved: committed (its index applied with its term) or
        # cleanly failed (another term applied there, or it sits past the final entry
        # in an older term - log terms only grow, so it can never commit).
        fin = final[0]
        for node, t in self.tickets:
            got = self.checker.applied.get(t.index)
            if got is None and not (t.index > fin.index and t.term < fin.term):
                raise AssertionError(
                    f"liveness: proposal {t} at {node} neither committed nor failed "
                    f"(final entry {fin})"
                )
        committed = sum(
            1 for _, t in self.tickets if self.checker.applied.get(t.index, (None,))[0] == t.term
        )
        if self.tickets and committed == 0:
            raise AssertionError("liveness: not a single proposal committed during the run")
