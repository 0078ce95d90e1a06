"""The nemesis: faults injected into a running :class:`ChaosCluster` on a schedule.

Owns: each fault kind (kill -9 and restart: the leader, a random node, a majority one at
a time; SIGSTOP/SIGCONT; partitions: majority/minority, isolate the leader, bridge,
one-way; clock skew of the leader under isolation; a node joining while another
fault runs), recording when each was active and what it did, and healing after it.
Never: asserts anything about the data (the checker does), or leaves a fault in place
when it returns (every fault heals in a ``finally``).

Sleeps here ARE the schedule ("hold the fault for 4 s"); every wait for a state polls
with a deadline.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from .cluster import ChaosCluster
from .proxy import partition_links

__all__ = ["FAULTS", "FaultRecord", "Nemesis"]


@dataclass
class FaultRecord:
    """One injected fault: what, on whom, when (monotonic), and proof it took effect."""

    kind: str
    targets: list[str]
    start: float
    end: float = 0.0
    evidence: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """``kill-leader [n2] 4.0s: pid 123 exited (-9); restarted``."""
        ev = "; ".join(self.evidence)
        return f"{self.kind} {self.targets} {self.end - self.start:.1f}s: {ev}"


FaultFn = Callable[["Nemesis", FaultRecord], Awaitable[None]]


class Nemesis:
    """Runs faults against ``cluster``; ``hold`` is how long each fault stays on."""

    def __init__(self, cluster: ChaosCluster, rng: random.Random, hold: float = 4.0) -> None:
        self.cluster = cluster
        self.rng = rng
        self.hold = hold
        self.records: list[FaultRecord] = []

    # ------------------------------------------------------------------ helpers

    async def _sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    async def _net(self, fn: Callable[..., Any], *args: Any) -> Any:
        # the proxy lives in this event loop: call it here; nft shells out: use a thread
        if self.cluster.proxy is not None:
            return fn(*args)
        return await self._sync(fn, *args)

    async def leader(self) -> str:
        """The running node leading the most groups (a random running node if none)."""
        nid = await self._sync(self.cluster.leader_of_most)
        if nid is None:
            nid = self.rng.choice(self.running())
        return str(nid)

    def running(self) -> list[str]:
        """Initial members whose process runs."""
        return [n for n in self.cluster.initial if self.cluster.nodes[n].alive()]

    async def _schedule(self, seconds: float) -> None:
        await anyio.sleep(seconds)  # the schedule itself: the fault stays on this long

    async def _kill(self, rec: FaultRecord, nid: str) -> None:
        c = self.cluster
        pid = c.nodes[nid].pid
        await self._sync(c.kill, nid, signal.SIGKILL)
        state = c.process_state(nid)
        proc = c.nodes[nid].proc
        code = proc.returncode if proc is not None else None
        rec.evidence.append(f"{nid} pid {pid} {state} (exit {code})")

    async def _restart(self, rec: FaultRecord, nid: str) -> None:
        await self._sync(self.cluster.start, nid)
        rec.evidence.append(f"{nid} restarted as pid {self.cluster.nodes[nid].pid}")

    async def _cut_links(self, rec: FaultRecord, links: set[tuple[str, str]]) -> None:
        for src, dst in sorted(links):
            await self._net(self.cluster.cut, src, dst)
        rec.evidence.append(f"{len(self.cluster.cut_links())} links cut")

    async def heal(self) -> None:
        """Heal links, resume paused nodes, restart dead initial members."""
        c = self.cluster
        await self._net(c.heal_all)
        for nid in c.initial:
            c.resume(nid)
            c.skew(nid)
            if not c.nodes[nid].alive():
                await self._sync(c.start, nid)

    async def run(self, kind: str) -> FaultRecord:
        """Inject one fault of ``kind``, hold it, heal; returns its record."""
        rec = FaultRecord(kind, [], time.monotonic())
        try:
            await FAULTS[kind](self, rec)
            if self.cluster.cut_links():
                rec.evidence.append(self.link_evidence())
        finally:
            with anyio.CancelScope(shield=True):
                await self.heal()
            rec.end = time.monotonic()
            self.records.append(rec)
        return rec

    def link_evidence(self) -> str:
        """What the cut links dropped so far (proxy counters or nft packet counters)."""
        c = self.cluster
        links = c.cut_links()
        if c.proxy is not None:
            stats = [c.proxy.stats.get(link) for link in links]
            cut = sum(s.connections_cut for s in stats if s)
            holed = sum(s.connections_black_holed for s in stats if s)
            dropped = sum(s.bytes_dropped for s in stats if s)
            return f"proxy: {cut} connections cut, {holed} black-holed, {dropped} bytes dropped"
        assert c.netns is not None
        packets = sum(c.netns.dropped_packets(d) for d in {d for _, d in links})
        return f"nft: {packets} packets dropped"

    async def recover(self, timeout: float) -> bool:
        """Wait (deadline) until the running cluster is healthy again."""
        try:
            await self._sync(self.cluster.wait_healthy, timeout, self.running())
        except (TimeoutError, RuntimeError):
            return False
        return True


# ---------------------------------------------------------------------- fault kinds


async def kill_leader(nem: Nemesis, rec: FaultRecord) -> None:
    """kill -9 the busiest leader, keep it down, restart it."""
    nid = await nem.leader()
    rec.targets = [nid]
    await nem._kill(rec, nid)
    await nem._schedule(nem.hold)
    await nem._restart(rec, nid)


async def kill_random(nem: Nemesis, rec: FaultRecord) -> None:
    """kill -9 a random node, keep it down, restart it."""
    nid = nem.rng.choice(nem.running())
    rec.targets = [nid]
    await nem._kill(rec, nid)
    await nem._schedule(nem.hold)
    await nem._restart(rec, nid)


async def kill_majority_rolling(nem: Nemesis, rec: FaultRecord) -> None:
    """kill -9 a majority of the nodes one at a time, each back before the next dies."""
    nodes = list(nem.cluster.initial)
    nem.rng.shuffle(nodes)
    victims = nodes[: len(nodes) // 2 + 1]
    rec.targets = victims
    for nid in victims:
        await nem._kill(rec, nid)
        await nem._schedule(nem.hold / 2)
        await nem._restart(rec, nid)
        ok = await nem.recover(30)
        rec.evidence.append(f"recovered after {nid}: {ok}")


async def pause_leader(nem: Nemesis, rec: FaultRecord) -> None:
    """SIGSTOP the busiest leader, hold, SIGCONT."""
    nid = await nem.leader()
    rec.targets = [nid]
    c = nem.cluster
    c.pause(nid)
    stopped = await _wait_state(nem, nid, lambda s: s == "T")
    rec.evidence.append(f"{nid} state {stopped} after SIGSTOP")
    await nem._schedule(nem.hold)
    c.resume(nid)
    running = await _wait_state(nem, nid, lambda s: s != "T")
    rec.evidence.append(f"{nid} state {running} after SIGCONT")


async def _wait_state(nem: Nemesis, nid: str, want: Callable[[str], bool]) -> str:
    """Poll the kernel's process state until ``want`` holds (2 s deadline)."""
    deadline = time.monotonic() + 2.0
    state = nem.cluster.process_state(nid)
    while not want(state) and time.monotonic() < deadline:
        await anyio.sleep(0.01)  # polling interval of a deadline-bounded wait
        state = nem.cluster.process_state(nid)
    return state


async def partition_majority(nem: Nemesis, rec: FaultRecord) -> None:
    """Split the nodes into a random majority and minority."""
    nodes = list(nem.cluster.initial)
    nem.rng.shuffle(nodes)
    k = len(nodes) // 2
    minority, majority = nodes[:k], nodes[k:]
    rec.targets = [f"{sorted(minority)}|{sorted(majority)}"]
    await nem._cut_links(rec, partition_links([minority, majority]))
    await nem._schedule(nem.hold)


async def isolate_leader(nem: Nemesis, rec: FaultRecord) -> None:
    """Cut the busiest leader off from every other node, both ways."""
    nid = await nem.leader()
    rest = [n for n in nem.cluster.initial if n != nid]
    rec.targets = [nid]
    await nem._cut_links(rec, partition_links([[nid], rest]))
    await nem._schedule(nem.hold)


async def bridge(nem: Nemesis, rec: FaultRecord) -> None:
    """Two halves that only one node (the bridge) can talk to both of."""
    nodes = list(nem.cluster.initial)
    nem.rng.shuffle(nodes)
    mid = len(nodes) // 2
    left, right = nodes[: mid + 1], nodes[mid:]
    rec.targets = [f"{sorted(left)}~{sorted(right)} via {nodes[mid]}"]
    await nem._cut_links(rec, partition_links([left, right]))
    await nem._schedule(nem.hold)


async def oneway_leader(nem: Nemesis, rec: FaultRecord) -> None:
    """The busiest leader can hear everyone but nobody hears it."""
    nid = await nem.leader()
    rec.targets = [nid]
    await nem._cut_links(rec, {(nid, o) for o in nem.cluster.initial if o != nid})
    await nem._schedule(nem.hold)


async def clock_skew_leader(nem: Nemesis, rec: FaultRecord) -> None:
    """Slow the busiest leader's lease clock (just inside the configured drift bound),
    then isolate it: a lease honoured too long would serve stale reads."""
    c = nem.cluster
    nid = await nem.leader()
    lease = c.election_ticks * c.tick_ms / 1000
    drift = c.max_clock_drift_ms / 1000
    # elapsed real time T reads as rate*T; stay inside the bound: (1-rate)*lease < drift
    rate = max(0.01, 1 - 0.9 * drift / lease)
    rec.targets = [nid]
    c.skew(nid, rate=rate, offset_ms=0)
    rec.evidence.append(f"{nid} lease clock rate {rate:.3f} (lease {lease}s, drift {drift}s)")
    await nem._schedule(0.5)  # let the skewed clock run before the cut
    await nem._cut_links(rec, partition_links([[nid], [n for n in c.initial if n != nid]]))
    await nem._schedule(nem.hold)


async def membership_join(nem: Nemesis, rec: FaultRecord) -> None:
    """A new node joins (registers in the cluster map) while a random node is killed."""
    c = nem.cluster
    spares = [n for n in c.nodes if n not in c.initial and not c.nodes[n].alive()]
    if not spares:
        rec.evidence.append("no spare node left to join")
        return
    joiner = spares[0]
    victim = nem.rng.choice(nem.running())
    rec.targets = [joiner, f"kill {victim}"]
    await nem._sync(c.start, joiner)
    await nem._kill(rec, victim)
    joined = await _wait_ready(nem, joiner, timeout=max(nem.hold, 20.0))
    rec.evidence.append(f"{joiner} in the cluster map: {joined}")
    await nem._restart(rec, victim)


async def _wait_ready(nem: Nemesis, nid: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await nem._sync(nem.cluster.status, nid)
        if st is not None and st.get("ready"):
            return True
        await anyio.sleep(0.2)  # polling interval of a deadline-bounded wait
    return False


FAULTS: dict[str, FaultFn] = {
    "kill-leader": kill_leader,
    "kill-random": kill_random,
    "kill-majority-rolling": kill_majority_rolling,
    "pause-leader": pause_leader,
    "partition-majority": partition_majority,
    "isolate-leader": isolate_leader,
    "bridge": bridge,
    "oneway-leader": oneway_leader,
    "clock-skew-leader": clock_skew_leader,
    "membership-join": membership_join,
}
