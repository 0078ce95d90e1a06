"""Run many :class:`MembershipCore` instances on a simulated network, in virtual time.

Owns: the glue between membership cores and a deterministic scheduler + faulty network
(``atoll.testing.Scheduler`` / ``SimNetwork``, passed in, so this module needs only their
shape): wake-ups, message delivery, crashes, and two kinds of slowness:

* **event-loop stalls** (:meth:`SimCluster.stall`) — a stalled node processes nothing,
  then on waking runs its overdue timers *before* the messages that queued up (the worst
  case for a Python event loop, where a timeout callback beats the several hops a late
  reply still has to make);
* **slow inbound processing** (:meth:`SimCluster.slow_inbound`) — the node's timers keep
  firing on time but every message that arrives is held until the episode ends (the
  Lifeguard paper's anomaly; in Atoll, gossip frames stuck behind a Raft batch waiting
  for fsync on the same connection, or a NATS slow consumer).
Never: reads a wall clock or global randomness; every random choice comes from RNGs
forked off the scheduler, so a run replays exactly from its seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from atoll.core import MemberInfo, MembershipEvent

from ._config import MembershipConfig
from ._core import MembershipCore
from ._messages import Message

__all__ = ["SimCluster", "SimNode"]


class _Handle(Protocol):
    def cancel(self) -> None: ...


class _Scheduler(Protocol):
    def now(self) -> float: ...
    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> Any: ...
    def fork_rng(self) -> Any: ...


class _Network(Protocol):
    def register(self, address: str, deliver: Callable[[str, Any], None]) -> None: ...
    def unregister(self, address: str) -> None: ...
    def send(self, src: str, dst: str, message: Any) -> None: ...


EventListener = Callable[[float, str, MembershipEvent], None]
"""``listener(time, observer_id, event)``."""


class SimNode:
    """One simulated node: its core plus its up/stalled state."""

    __slots__ = (
        "armed_at",
        "backlog",
        "core",
        "deaf_until",
        "handle",
        "node_id",
        "stalled_until",
        "up",
    )

    def __init__(self, core: MembershipCore) -> None:
        self.core = core
        self.node_id = core.id
        self.up = True
        self.stalled_until = 0.0
        self.deaf_until = 0.0
        self.backlog: list[tuple[str, Message]] = []
        self.handle: Any = None
        self.armed_at: float | None = None


class SimCluster:
    """A cluster of membership cores on a simulated network (addresses = node ids)."""

    def __init__(self, scheduler: _Scheduler, network: _Network, config: MembershipConfig) -> None:
        self.scheduler = scheduler
        self.network = network
        self.config = config
        self.nodes: dict[str, SimNode] = {}
        self.listeners: list[EventListener] = []

    # ------------------------------------------------------------------ building
    def add_node(self, node_id: str, *, zone: str = "", rack: str = "", **meta: Any) -> SimNode:
        """Create a node (not yet joined) whose address is its id."""
        info = MemberInfo(node_id=node_id, address=node_id, zone=zone, rack=rack, **meta)
        core = MembershipCore(info, self.config, self.scheduler.fork_rng(), self.scheduler.now())
        node = SimNode(core)
        self.nodes[node_id] = node
        self.network.register(node_id, functools.partial(self._deliver, node))
        self._rearm(node)
        return node

    def bootstrap(self, node_ids: Iterable[str]) -> list[SimNode]:
        """Add nodes that already know each other as alive (a converged cluster)."""
        nodes = [self.add_node(n) for n in node_ids]
        infos = [n.core.local for n in nodes]
        now = self.scheduler.now()
        for n in nodes:
            n.core.bootstrap(infos, now)
        return nodes

    def join(self, node_id: str, seeds: list[str]) -> None:
        """Make ``node_id`` join through ``seeds``."""
        node = self.nodes[node_id]
        node.core.join(seeds, self.scheduler.now())
        self._flush(node)

    # ------------------------------------------------------------------ faults
    def crash(self, node_id: str) -> None:
        """Stop a node abruptly: it sends and answers nothing from now on."""
        node = self.nodes[node_id]
        node.up = False
        self.network.unregister(node_id)
        if node.handle is not None:
            node.handle.cancel()

    def stall(self, node_id: str, duration: float) -> None:
        """Freeze a node's event loop for ``duration``; it catches up afterwards."""
        node = self.nodes[node_id]
        node.stalled_until = max(node.stalled_until, self.scheduler.now() + duration)
        self._rearm(node)

    def slow_inbound(self, node_id: str, duration: float) -> None:
        """Hold every message ``node_id`` receives for ``duration``; its timers keep running.

        Held messages are processed, in arrival order, when the episode ends.
        """
        node = self.nodes[node_id]
        until = self.scheduler.now() + duration
        if until > node.deaf_until:
            node.deaf_until = until
            self.scheduler.call_at(until, self._undeafen, node)

    def _undeafen(self, node: SimNode) -> None:
        if not node.up or self.scheduler.now() < node.deaf_until:
            return
        if self.scheduler.now() < node.stalled_until:
            self._rearm(node)  # the stall's wake-up drains the backlog
            return
        self._drain(node)
        self._flush(node)

    def leave(self, node_id: str) -> None:
        """Graceful leave (the node keeps running until :meth:`crash`)."""
        node = self.nodes[node_id]
        node.core.leave(self.scheduler.now())
        self._flush(node)

    # ------------------------------------------------------------------ views
    def view(self, observer: str, subject: str) -> MemberInfo | None:
        """What ``observer`` thinks of ``subject``."""
        return self.nodes[observer].core.member(subject)

    def up_nodes(self) -> list[SimNode]:
        """Nodes that have not crashed."""
        return [n for n in self.nodes.values() if n.up]

    # ------------------------------------------------------------------ driving
    def _deliver(self, node: SimNode, src: str, msg: Message) -> None:
        if not node.up:
            return
        now = self.scheduler.now()
        if now < node.stalled_until or now < node.deaf_until:
            node.backlog.append((src, msg))
            return
        node.core.receive(src, msg, now)
        self._flush(node)

    def _wake(self, node: SimNode) -> None:
        node.handle = None
        node.armed_at = None
        if not node.up:
            return
        now = self.scheduler.now()
        if now < node.stalled_until:
            self._rearm(node)
            return
        node.core.tick(now)  # overdue timers first: the stalled loop's worst case
        if now >= node.deaf_until:
            self._drain(node)
        self._flush(node)

    def _drain(self, node: SimNode) -> None:
        if node.backlog:
            now = self.scheduler.now()
            backlog, node.backlog = node.backlog, []
            for src, msg in backlog:
                node.core.receive(src, msg, now)

    def _flush(self, node: SimNode) -> None:
        out = node.core.take_output()
        if out.messages:
            send = self.network.send
            src = node.node_id
            for address, msg in out.messages:
                send(src, address, msg)
        if out.events and self.listeners:
            now = self.scheduler.now()
            for ev in out.events:
                for listener in self.listeners:
                    listener(now, node.node_id, ev)
        self._rearm(node)

    def _rearm(self, node: SimNode) -> None:
        if not node.up:
            return
        t = node.core.next_wakeup()
        if node.stalled_until > self.scheduler.now():
            t = node.stalled_until if t is None else max(t, node.stalled_until)
        if t is None or t == node.armed_at:
            return
        if node.handle is not None:
            node.handle.cancel()
        node.armed_at = t
        node.handle = self.scheduler.call_at(t, self._wake, node)
