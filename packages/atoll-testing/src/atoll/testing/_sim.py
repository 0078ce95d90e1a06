"""Deterministic simulation: a virtual clock, a seeded scheduler and a faulty network.

Owns: the machinery that lets a whole cluster of pure protocol cores run in one process,
in virtual time, replayable from a seed (the FoundationDB idea).
Never: reads the wall clock, sleeps, or uses the global ``random`` module.

Typical use::

    sched = Scheduler(seed=7)
    net = SimNetwork(sched, LinkFaults(drop=0.05))
    net.register("n1", lambda src, msg: core1.receive(src, msg))
    sched.call_later(0.1, tick)
    sched.run_for(10.0)
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from atoll.core import make_rng

__all__ = ["LinkFaults", "NetworkStats", "Scheduler", "SimNetwork", "TimerHandle", "VirtualClock"]


class VirtualClock:
    """A clock that only moves when the scheduler advances it. Implements atoll.core.Clock."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        """Current virtual time in seconds."""
        return self._now

    def advance_to(self, t: float) -> None:
        """Move time forward to ``t`` (never backwards)."""
        if t < self._now:
            raise ValueError(f"virtual time cannot go back from {self._now} to {t}")
        self._now = t


@attrs.define(eq=False)
class TimerHandle:
    """A scheduled callback; ``cancel()`` stops it from running."""

    when: float
    seq: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        """Do not run this callback."""
        self.cancelled = True

    def __lt__(self, other: TimerHandle) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


class Scheduler:
    """Runs callbacks in virtual-time order; ties break by scheduling order.

    Everything random in a simulation must draw from ``scheduler.rng`` (or an RNG derived
    from it with :meth:`fork_rng`) so the run replays exactly from ``seed``.
    """

    def __init__(self, seed: int = 0, *, start: float = 0.0) -> None:
        self.seed = seed
        self.clock = VirtualClock(start)
        self.rng = make_rng(seed)
        self._queue: list[TimerHandle] = []
        self._seq = itertools.count()
        self.steps = 0

    def now(self) -> float:
        """Current virtual time."""
        return self.clock.now()

    def fork_rng(self) -> Any:
        """A new RNG seeded from this scheduler's RNG (deterministic per call order)."""
        return make_rng(self.rng.getrandbits(64))

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` at virtual time ``when`` (or now, if it is in the past)."""
        h = TimerHandle(max(when, self.clock.now()), next(self._seq), fn, args)
        heapq.heappush(self._queue, h)
        return h

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` after ``delay`` virtual seconds."""
        return self.call_at(self.clock.now() + max(0.0, delay), fn, *args)

    def call_every(
        self, interval: float, fn: Callable[[], Any], *, jitter: float = 0.0
    ) -> Callable[[], None]:
        """Run ``fn()`` every ``interval`` seconds (plus up to ``jitter``); returns a stopper."""
        state = {"handle": None, "stopped": False}

        def fire() -> None:
            if state["stopped"]:
                return
            fn()
            arm()

        def arm() -> None:
            extra = self.rng.uniform(0, jitter) if jitter else 0.0
            state["handle"] = self.call_later(interval + extra, fire)  # type: ignore[assignment]

        def stop() -> None:
            state["stopped"] = True
            if state["handle"] is not None:
                state["handle"].cancel()  # type: ignore[attr-defined]

        arm()
        return stop

    @property
    def pending(self) -> int:
        """Callbacks waiting to run (cancelled ones included until they surface)."""
        return len(self._queue)

    def next_time(self) -> float | None:
        """Virtual time of the next live callback, or None when idle."""
        while self._queue and self._queue[0].cancelled:
            heapq.heappop(self._queue)
        return self._queue[0].when if self._queue else None

    def step(self) -> bool:
        """Run the next callback; False when nothing is scheduled."""
        while self._queue:
            h = heapq.heappop(self._queue)
            if h.cancelled:
                continue
            self.clock.advance_to(h.when)
            self.steps += 1
            h.fn(*h.args)
            return True
        return False

    def run_until(self, t: float) -> None:
        """Run every callback due at or before ``t``, then set the clock to ``t``."""
        while True:
            nt = self.next_time()
            if nt is None or nt > t:
                break
            self.step()
        if t > self.clock.now():
            self.clock.advance_to(t)

    def run_for(self, duration: float) -> None:
        """Run for ``duration`` virtual seconds."""
        self.run_until(self.clock.now() + duration)

    def run_until_true(
        self, predicate: Callable[[], bool], *, timeout: float, check_every: float = 0.0
    ) -> bool:
        """Run until ``predicate()`` holds (checked after each callback) or ``timeout`` passes.

        Returns whether the predicate became true. Time never jumps past the deadline.
        """
        deadline = self.clock.now() + timeout
        if predicate():
            return True
        while True:
            nt = self.next_time()
            if nt is None or nt > deadline:
                self.run_until(deadline)
                return predicate()
            self.step()
            if predicate():
                return True


@attrs.define
class LinkFaults:
    """Fault model of one directed link. Probabilities are per message, in [0, 1].

    ``delay`` is the base one-way latency range in seconds; ``reorder`` is the chance a
    message gets an extra delay of up to ``reorder_delay`` (so later ones overtake it).
    """

    drop: float = 0.0
    duplicate: float = 0.0
    delay: tuple[float, float] = (0.0005, 0.0015)
    reorder: float = 0.0
    reorder_delay: float = 0.02
    blocked: bool = False
    """A partition: nothing gets through."""


@attrs.define
class NetworkStats:
    """Counters of what the simulated network did."""

    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    bytes_sent: int = 0


Deliver = Callable[[str, Any], None]


class SimNetwork:
    """A simulated message network between addresses, with per-link faults.

    ``send(src, dst, msg)`` schedules ``deliver(src, msg)`` on ``dst`` after the link's
    delay, unless the link drops it. A crashed node is ``unregister``-ed: messages to it
    vanish. ``partition([{"a","b"}, {"c"}])`` blocks every link between groups.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        default: LinkFaults | None = None,
        *,
        size_of: Callable[[Any], int] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.default = default or LinkFaults()
        self._links: dict[tuple[str, str], LinkFaults] = {}
        self._nodes: dict[str, Deliver] = {}
        self._rng = scheduler.fork_rng()
        self._size_of = size_of
        self.stats = NetworkStats()
        self.per_node_sent: dict[str, int] = {}
        self.per_node_bytes: dict[str, int] = {}

    def register(self, address: str, deliver: Deliver) -> None:
        """Attach a node: messages to ``address`` go to ``deliver(src, msg)``."""
        self._nodes[address] = deliver

    def unregister(self, address: str) -> None:
        """Detach a node (crash): in-flight and future messages to it are lost."""
        self._nodes.pop(address, None)

    @property
    def addresses(self) -> list[str]:
        """Currently attached addresses."""
        return list(self._nodes)

    def link(self, src: str, dst: str) -> LinkFaults:
        """The fault model of ``src -> dst`` (the default unless set)."""
        return self._links.get((src, dst), self.default)

    def set_link(self, src: str, dst: str, faults: LinkFaults, *, both: bool = True) -> None:
        """Override the fault model of one link (both directions unless ``both=False``)."""
        self._links[(src, dst)] = faults
        if both:
            self._links[(dst, src)] = attrs.evolve(faults)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Block every link between different groups (addresses not listed are untouched)."""
        gs = [set(g) for g in groups]
        for i, a in enumerate(gs):
            for b in gs[i + 1 :]:
                for x in a:
                    for y in b:
                        for s, d in ((x, y), (y, x)):
                            self._links[(s, d)] = attrs.evolve(self.link(s, d), blocked=True)

    def isolate(self, address: str) -> None:
        """Cut ``address`` off from every other known address."""
        others = [a for a in self._nodes if a != address]
        self.partition([[address], others])

    def heal(self) -> None:
        """Remove every partition (other per-link faults stay)."""
        for key, f in list(self._links.items()):
            if f.blocked:
                self._links[key] = attrs.evolve(f, blocked=False)

    def clear_faults(self) -> None:
        """Forget every per-link override; all links use the default again."""
        self._links.clear()

    def send(self, src: str, dst: str, message: Any) -> None:
        """Send ``message`` from ``src`` to ``dst`` through the faulty link."""
        self.stats.sent += 1
        self.per_node_sent[src] = self.per_node_sent.get(src, 0) + 1
        if self._size_of is not None:
            n = self._size_of(message)
            self.stats.bytes_sent += n
            self.per_node_bytes[src] = self.per_node_bytes.get(src, 0) + n
        f = self.link(src, dst)
        rng = self._rng
        if f.blocked or (f.drop and rng.random() < f.drop):
            self.stats.dropped += 1
            return
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        if copies == 2:
            self.stats.duplicated += 1
        for _ in range(copies):
            delay = rng.uniform(*f.delay)
            if f.reorder and rng.random() < f.reorder:
                delay += rng.uniform(0, f.reorder_delay)
            self.scheduler.call_later(delay, self._deliver, src, dst, message)

    def _deliver(self, src: str, dst: str, message: Any) -> None:
        target = self._nodes.get(dst)
        if target is None or self.link(src, dst).blocked:
            self.stats.dropped += 1
            return
        self.stats.delivered += 1
        target(src, message)
