"""Scenarios and their runner: cluster + workload + nemesis, then the checker's verdict.

Owns: the scenario table (short and long suites), the client workload (concurrent
get/put/cas on a small key set, every op recorded as invoke/ok/fail/info), running one
scenario end to end, writing its artifacts (history, check result, failure pictures,
node logs) and the one-paragraph summary each scenario prints.
Never: retries an operation behind the history's back, or turns an ambiguous error into
``fail`` for a write (anything that may have applied is ``info``).
"""

from __future__ import annotations

import itertools
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson

from atoll.client import AtollClient
from atoll.core import AtollError, InvalidRequest

from .checker import CheckResult, as_jsonable, check, explain
from .cluster import ChaosCluster, NetMode
from .history import HistoryRecorder, Op, pair_events
from .nemesis import FAULTS, Nemesis
from .netns import netns_available
from .visualize import FaultWindow, render_html

__all__ = ["LONG", "SHORT", "Scenario", "ScenarioResult", "run_scenario"]


@dataclass(frozen=True)
class Scenario:
    """A cluster shape, a network mode and the faults to inject in order."""

    name: str
    nodes: int
    mode: NetMode
    faults: tuple[str, ...]
    hold: float = 4.0
    """Seconds each fault stays on."""
    gap: float = 2.0
    """Quiet seconds after each fault heals (the cluster recovers under load)."""
    clients: int = 6
    keys: int = 4
    seed: int = 1
    rate: float = 250.0
    """Operations per second each client starts at most. The history's length then
    depends on the scenario, not on how fast the nodes are: the checker's search grows
    faster than linearly with it, and an undecided check counts as a failure."""


ALL_FAULTS = tuple(FAULTS)

SHORT: tuple[Scenario, ...] = (
    Scenario(
        "processes-3",
        3,
        "proxy",
        ("kill-leader", "pause-leader", "membership-join", "kill-majority-rolling"),
    ),
    Scenario(
        "network-3",
        3,
        "proxy",
        (
            "partition-majority",
            "isolate-leader",
            "bridge",
            "oneway-leader",
            "clock-skew-leader",
            "kill-random",
        ),
    ),
    Scenario("netns-3", 3, "netns", ("isolate-leader", "partition-majority"), hold=3.0),
)

LONG: tuple[Scenario, ...] = (
    # Twice the faults, so twice as long: a lower rate keeps its history (150,640
    # operations at 250/s, checked in 297 s of the 300 s budget in a slow phase) in
    # the checker's reach.
    Scenario("all-3-proxy", 3, "proxy", ALL_FAULTS * 2, hold=5.0, seed=2, rate=150.0),
    Scenario("all-5-proxy", 5, "proxy", ALL_FAULTS, hold=5.0, clients=8, keys=6, seed=3),
    Scenario("all-3-netns", 3, "netns", ALL_FAULTS, hold=5.0, seed=4),
    Scenario("all-5-netns", 5, "netns", ALL_FAULTS, hold=5.0, clients=8, keys=6, seed=5),
)


@dataclass
class ScenarioResult:
    """What one scenario did and concluded."""

    scenario: Scenario
    artifacts: Path
    counts: dict[str, int] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    verdict: str = "error"
    check: CheckResult | None = None
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Skipped, or linearizable with no harness problem."""
        return self.skipped is not None or (self.verdict == "ok" and not self.problems)

    def report(self) -> str:
        """The paragraph printed for this scenario."""
        s = self.scenario
        head = f"== {s.name} ({s.nodes} nodes, {s.mode}) "
        if self.skipped:
            return head + f"SKIPPED: {self.skipped}"
        c = self.counts
        lines = [
            head + ("PASS" if self.passed else "FAIL") + f" in {self.seconds:.0f}s",
            f"   operations: {c.get('total', 0)} (ok {c.get('ok', 0)}, "
            f"fail {c.get('fail', 0)}, unknown {c.get('info', 0)})",
            f"   faults injected: {len(self.faults)}",
            *(f"     - {f}" for f in self.faults),
            f"   checker: {self.check.summary() if self.check else self.verdict}",
            *(f"   problem: {p}" for p in self.problems),
            f"   artifacts: {self.artifacts}",
        ]
        return "\n".join(lines)


# ---------------------------------------------------------------------- workload


def pace(previous_start: float, interval: float, now: float) -> tuple[float, float]:
    """The next operation's start time and how long to wait for it (never negative).

    Starts are ``interval`` apart; a worker that fell behind starts at once and does not
    burst to catch up.
    """
    start = max(previous_start + interval, now)
    return start, start - now


class Workload:
    """``clients`` concurrent processes doing get / put / cas on ``keys`` keys."""

    def __init__(
        self, cluster: ChaosCluster, rec: HistoryRecorder, scenario: Scenario, rng: random.Random
    ) -> None:
        self.cluster = cluster
        self.rec = rec
        self.sc = scenario
        self.rng = rng
        self.keys = [f"k{i}" for i in range(scenario.keys)]
        self._process = itertools.count()
        self._values = itertools.count()
        self._stop = anyio.Event()
        self.done = anyio.Event()

    def stop(self) -> None:
        """Ask every worker to finish its current op and stop."""
        self._stop.set()

    async def run(self) -> None:
        """Run the workers until :meth:`stop`."""
        eps = self.cluster.endpoints()
        try:
            async with anyio.create_task_group() as tg:
                for w in range(self.sc.clients):
                    client = AtollClient(eps, timeout=3.0, attempt_timeout=0.5)
                    await _connect(client)
                    tg.start_soon(self._worker, client, random.Random(self.rng.random() + w))
        finally:
            self.done.set()

    async def _worker(self, client: AtollClient, rng: random.Random) -> None:
        process = next(self._process)
        seen: dict[str, str | None] = {}
        interval = 1.0 / self.sc.rate if self.sc.rate > 0 else 0.0
        next_start = anyio.current_time()
        try:
            while not self._stop.is_set():
                if interval:
                    # Pacing: an op-rate cap, not a wait for a condition.
                    next_start, delay = pace(next_start, interval, anyio.current_time())
                    await anyio.sleep(delay)
                key = rng.choice(self.keys)
                r = rng.random()
                if r < 0.45:
                    await self._get(client, process, key, seen)
                elif r < 0.75:
                    if not await self._put(client, process, key):
                        process = next(self._process)  # an unknown op stays open forever
                elif not await self._cas(client, process, key, seen, rng):
                    process = next(self._process)
        finally:
            with anyio.CancelScope(shield=True):
                await client.close()

    async def _get(
        self, client: AtollClient, p: int, key: str, seen: dict[str, str | None]
    ) -> None:
        ev = self.rec.invoke(p, "get", key, None)
        try:
            v = await client.get(key.encode())
        except (AtollError, OSError) as exc:
            self.rec.complete(ev, "fail", error=repr(exc))  # a read changes nothing
            return
        val = v.decode() if v is not None else None
        seen[key] = val
        self.rec.complete(ev, "ok", val)

    async def _put(self, client: AtollClient, p: int, key: str) -> bool:
        val = f"v{next(self._values)}"
        ev = self.rec.invoke(p, "put", key, val)
        try:
            await client.put(key.encode(), val.encode())
        except InvalidRequest as exc:
            # refused by validation before any attempt could apply? Not provable after
            # retries, so it stays unknown like every other write error.
            self.rec.complete(ev, "info", error=repr(exc))
            return False
        except (AtollError, OSError) as exc:
            self.rec.complete(ev, "info", error=repr(exc))
            return False
        self.rec.complete(ev, "ok")
        return True

    async def _cas(
        self,
        client: AtollClient,
        p: int,
        key: str,
        seen: dict[str, str | None],
        rng: random.Random,
    ) -> bool:
        expected = seen.get(key) if rng.random() < 0.8 else f"v{rng.randrange(0, 50)}"
        new = f"v{next(self._values)}"
        ev = self.rec.invoke(p, "cas", key, [expected, new])
        try:
            res = await client.cas(
                key.encode(), expected.encode() if expected is not None else None, new.encode()
            )
        except (AtollError, OSError) as exc:
            self.rec.complete(ev, "info", error=repr(exc))
            return False
        prev = res.previous.decode() if res.previous is not None else None
        self.rec.complete(ev, "ok", [res.succeeded, prev if res.succeeded else None])
        if res.succeeded:
            seen[key] = new
        return True


async def _connect(client: AtollClient) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await client.connect()
            return
        except AtollError:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.2)  # polling interval of a deadline-bounded wait


# ---------------------------------------------------------------------- running


def run_scenario(
    sc: Scenario, out: Path, *, check_budget: float = 300.0, storage: str = "lmdb"
) -> ScenarioResult:
    """Run ``sc`` with artifacts under ``out/<name>`` on nodes with ``storage``; never
    raises for a failed run."""
    art = out / sc.name
    art.mkdir(parents=True, exist_ok=True)
    res = ScenarioResult(sc, art)
    if sc.mode == "netns":
        why = netns_available()
        if why is not None:
            res.skipped = f"network namespaces unavailable here: {why}"
            return res
    t0 = time.monotonic()
    try:
        anyio.run(_run, sc, art, res, storage)
    except Exception as exc:
        res.problems.append(f"harness error: {exc!r} (traceback in {art / 'error.txt'})")
        (art / "error.txt").write_text(traceback.format_exc())
    hist = art / "history.jsonl"
    if hist.exists() and res.counts:
        ops = pair_events(_load(hist))
        res.check = check(ops, time_budget=check_budget)
        res.verdict = res.check.verdict
        _write_check(res, ops)
    res.seconds = time.monotonic() - t0
    (art / "summary.txt").write_text(res.report() + "\n")
    return res


def _load(path: Path) -> list[Any]:
    from .history import load_events

    return load_events(path)


async def _run(sc: Scenario, art: Path, res: ScenarioResult, storage: str = "lmdb") -> None:
    rng = random.Random(sc.seed)
    cluster = ChaosCluster(art / "cluster", n=sc.nodes, mode=sc.mode, storage=storage)
    rec = HistoryRecorder(art / "history.jsonl")
    try:
        async with anyio.create_task_group() as tg:
            cluster.plan()
            if cluster.proxy is not None:
                await tg.start(cluster.proxy.serve)
            for nid in cluster.initial:
                cluster.start(nid)
            await anyio.to_thread.run_sync(cluster.wait_healthy, 90.0, cluster.initial)
            nem = Nemesis(cluster, rng, hold=sc.hold)
            work = Workload(cluster, rec, sc, rng)
            tg.start_soon(work.run)
            await anyio.sleep(sc.gap)  # the schedule: load before the first fault
            for kind in sc.faults:
                r = await nem.run(kind)
                res.faults.append(r.describe())
                await anyio.sleep(sc.gap)  # the schedule: quiet period under load
                if not await nem.recover(30):
                    res.problems.append(f"cluster not healthy 30s after {kind}")
            await nem.heal()
            if not await nem.recover(60):
                res.problems.append("cluster did not recover after the last fault")
            await anyio.sleep(sc.gap)  # the schedule: a final quiet period under load
            work.stop()
            with anyio.move_on_after(15):  # workers exit after their current op
                await work.done.wait()
            _fault_windows(art, nem)
            if cluster.proxy is not None:
                _proxy_stats(art, cluster)
            tg.cancel_scope.cancel()
    finally:
        rec.close()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(cluster.stop)
        ops = pair_events(rec.events)
        res.counts = {
            "total": len(ops),
            **{st: sum(1 for o in ops if o.status == st) for st in ("ok", "fail", "info")},
        }


def _fault_windows(art: Path, nem: Nemesis) -> None:
    (art / "faults.json").write_bytes(
        orjson.dumps(
            [
                {
                    "kind": r.kind,
                    "targets": r.targets,
                    "start": r.start,
                    "end": r.end,
                    "evidence": r.evidence,
                }
                for r in nem.records
            ],
            option=orjson.OPT_INDENT_2,
        )
    )


def _proxy_stats(art: Path, cluster: ChaosCluster) -> None:
    assert cluster.proxy is not None
    (art / "links.json").write_bytes(
        orjson.dumps(
            {f"{s}->{d}": vars(st) for (s, d), st in sorted(cluster.proxy.stats.items())},
            option=orjson.OPT_INDENT_2,
        )
    )


def _write_check(res: ScenarioResult, ops: list[Op]) -> None:
    assert res.check is not None
    art = res.artifacts
    by_id = {o.id: o for o in ops}
    doc = {
        "verdict": res.check.verdict,
        "keys": {
            k: {"verdict": r.verdict, "ops": r.ops, "seconds": r.seconds}
            for k, r in res.check.keys.items()
        },
    }
    (art / "check.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    bad = res.check.failures()
    if not bad:
        return
    faults: list[FaultWindow] = []
    fpath = art / "faults.json"
    if fpath.exists():
        for f in orjson.loads(fpath.read_bytes()):
            faults.append(FaultWindow(f"{f['kind']} {f['targets']}", f["start"], f["end"]))
    notes: list[str] = []
    sections = []
    for r in bad:
        notes += explain(r, by_id)
        if r.shrunk is not None:
            (art / f"failing-{r.key}.jsonl").write_bytes(
                b"".join(orjson.dumps(as_jsonable(o)) + b"\n" for o in r.shrunk)
            )
            sections.append(
                (f"key {r.key}: minimal failing sub-history", r.shrunk, r.best_order, set(r.stuck))
            )
    (art / "failure.txt").write_text("\n".join(notes) + "\n")
    render_html(
        art / "failure.html",
        title=f"{res.scenario.name}: not linearizable",
        sections=sections,
        faults=faults,
        notes=notes,
    )
