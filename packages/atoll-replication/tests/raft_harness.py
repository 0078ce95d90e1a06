"""A test harness for RaftNode: a state machine, a shell loop, and a synchronous network.

``Peer`` is one node plus its "disk" (a MemoryLogStorage that holds only what the node
persisted) and a tiny key-value state machine with a chained digest, so tests and the
simulator can compare applied histories. ``Net`` delivers messages synchronously in FIFO
order with per-link cuts and drop filters (etcd's ``network`` test helper).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from atoll.core import make_rng
from atoll.replication import (
    ConfState,
    Entry,
    EntryKind,
    MemoryLogStorage,
    Message,
    MessageType,
    RaftConfig,
    RaftNode,
    ReadState,
    Ready,
    Role,
)

MT = MessageType


class KV:
    """A replicated key-value map; every applied index updates a chained digest."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.index = 0
        self.digest = b""

    def apply(self, e: Entry) -> None:
        assert e.index == self.index + 1, f"applying {e.index} after {self.index}"
        if e.kind is EntryKind.NORMAL and e.data:
            k, _, v = e.data.decode().partition("=")
            self.data[k] = v
        self.digest = hashlib.blake2b(
            self.digest + f"{e.index}:{e.term}:".encode() + e.data, digest_size=16
        ).digest()
        self.index = e.index

    def to_bytes(self) -> bytes:
        return orjson.dumps({"d": self.data, "i": self.index, "h": self.digest.hex()})

    @classmethod
    def from_bytes(cls, b: bytes) -> KV:
        kv = cls()
        if b:
            doc = orjson.loads(b)
            kv.data, kv.index, kv.digest = doc["d"], doc["i"], bytes.fromhex(doc["h"])
        return kv


def persist(disk: MemoryLogStorage, rd: Ready) -> None:
    """Write a Ready's durable part to ``disk`` (snapshot, entries, hard state)."""
    if rd.snapshot is not None:
        disk.apply_snapshot(rd.snapshot)
    if rd.entries:
        disk.append(rd.entries)
    if rd.hard_state is not None:
        disk.set_hard_state(rd.hard_state)


class Peer:
    """One node: RaftNode + disk + state machine + what it reported."""

    def __init__(
        self,
        node_id: str,
        disk: MemoryLogStorage,
        *,
        seed: int = 0,
        clock: Any = None,
        **cfg: Any,
    ) -> None:
        self.id = node_id
        self.disk = disk
        self.cfg = cfg
        self.clock = clock
        self.kv = KV.from_bytes(disk.snapshot().data)
        cfg.setdefault("election_ticks", 10)
        self.raft = RaftNode(
            RaftConfig(node_id=node_id, applied=disk.snapshot().meta.index, **cfg),
            disk,
            rng=make_rng(seed),
            clock=clock,
        )
        self.read_states: list[ReadState] = []
        self.events: list[Any] = []
        self.applied: list[Entry] = []
        self.conf_history: list[ConfState] = []
        self.on_apply: Callable[[Peer, Entry], None] | None = None

    def handle(self, rd: Ready) -> list[Message]:
        """Persist, apply and advance one Ready; returns every message to send."""
        persist(self.disk, rd)
        if rd.snapshot is not None:
            self.kv = KV.from_bytes(rd.snapshot.data)
        for e in rd.committed_entries:
            self.kv.apply(e)
            self.applied.append(e)
            if self.on_apply is not None:
                self.on_apply(self, e)
        self.read_states.extend(rd.read_states)
        if rd.conf_state is not None:
            self.conf_history.append(rd.conf_state)
        self.events.extend(rd.events)
        if rd.snapshot_request is not None:
            self.take_snapshot()
        self.raft.advance(rd)
        return [*rd.messages, *rd.messages_after_persist]

    def process(self) -> list[Message]:
        out: list[Message] = []
        while self.raft.has_ready():
            out.extend(self.handle(self.raft.ready()))
        return out

    def take_snapshot(self, compact: bool = True) -> None:
        """Snapshot the state machine at its applied index and compact the log."""
        idx = self.kv.index
        if idx <= self.disk.snapshot().meta.index:
            return
        cs = self.raft.conf_state
        self.disk.create_snapshot(idx, cs, self.kv.to_bytes())
        # This harness restarts a node from its snapshot (applied = snapshot index), so
        # the membership it restarts with must be the snapshot's.
        self.disk.set_conf_state(cs)
        if compact:
            self.disk.compact(min(idx, self.raft.compaction_floor()))


class Net:
    """Synchronous FIFO delivery between peers, with cuts and message-type filters."""

    def __init__(self, ids: Iterable[str], *, learners: Iterable[str] = (), **cfg: Any) -> None:
        ids = list(ids)
        self.peers: dict[str, Peer] = {}
        for i, n in enumerate(ids):
            disk = bootstrap(ids, learners)
            self.peers[n] = Peer(n, disk, seed=i + 1, **cfg)
        for i, n in enumerate(learners, start=len(ids)):
            self.peers[n] = Peer(n, bootstrap(ids, learners), seed=i + 1, **cfg)
        self.cut_links: set[tuple[str, str]] = set()
        self.drop_types: set[MessageType] = set()
        self.dropped: list[Message] = []
        self.delivered: list[Message] = []
        self.hook: Callable[[Message], Message | None] | None = None
        """Rewrites (or drops, returning None) each message before delivery."""

    def __getitem__(self, node_id: str) -> RaftNode:
        return self.peers[node_id].raft

    def add_peer(self, node_id: str, disk: MemoryLogStorage | None = None, **cfg: Any) -> Peer:
        p = Peer(node_id, disk or MemoryLogStorage(), seed=len(self.peers) + 1, **cfg)
        self.peers[node_id] = p
        return p

    def restart(self, node_id: str) -> Peer:
        """Crash ``node_id`` and start it again from what its disk holds."""
        old = self.peers[node_id]
        p = Peer(node_id, old.disk, seed=hash(node_id) & 0xFFFF, clock=old.clock, **old.cfg)
        self.peers[node_id] = p
        return p

    def cut(self, a: str, b: str) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, a: str) -> None:
        for b in self.peers:
            if b != a:
                self.cut(a, b)

    def recover(self) -> None:
        self.cut_links.clear()
        self.drop_types.clear()
        self.hook = None

    def send(self, msgs: Iterable[Message]) -> None:
        q: deque[Message] = deque(msgs)
        for p in self.peers.values():
            q.extend(p.process())
        while q:
            m = q.popleft()
            if self.hook is not None:
                hooked = self.hook(m)
                if hooked is None:
                    self.dropped.append(m)
                    continue
                m = hooked
            if (
                (m.src, m.dst) in self.cut_links
                or m.type in self.drop_types
                or (m.dst not in self.peers)
            ):
                self.dropped.append(m)
                continue
            self.delivered.append(m)
            p = self.peers[m.dst]
            p.raft.step(m)
            q.extend(p.process())

    def settle(self) -> None:
        self.send([])

    def tick(self, node_id: str, n: int = 1) -> None:
        for _ in range(n):
            self[node_id].tick()
            self.settle()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for p in self.peers.values():
                p.raft.tick()
            self.settle()

    def elect(self, node_id: str) -> None:
        self[node_id].campaign()
        self.settle()
        assert self[node_id].role is Role.LEADER, f"{node_id} did not win: {self[node_id].role}"

    def propose(self, node_id: str, data: bytes) -> Any:
        t = self[node_id].propose(data)
        self.settle()
        return t

    def leader(self) -> str | None:
        ls = [n for n, p in self.peers.items() if p.raft.role is Role.LEADER]
        return max(ls, key=lambda n: self[n].term) if ls else None


def bootstrap(voters: Iterable[str], learners: Iterable[str] = ()) -> MemoryLogStorage:
    """A fresh disk for an initial member: a snapshot at index 1 holding the membership,
    so a node added later (empty disk) learns the membership from a snapshot."""
    disk = MemoryLogStorage()
    cs = ConfState(voters=frozenset(voters), learners=frozenset(learners))
    disk.append([Entry(1, 1)])
    kv = KV()
    kv.index = 1
    disk.create_snapshot(1, cs, kv.to_bytes())
    disk.compact(1)
    disk.set_conf_state(cs)
    return disk


def msgs_of(msgs: Iterable[Message], kind: MessageType) -> list[Message]:
    return [m for m in msgs if m.type is kind]
