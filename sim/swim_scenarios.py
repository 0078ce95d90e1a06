"""Measure SWIM, SWIM+Lifeguard and phi accrual membership in deterministic simulation.

Owns: the measurement scenarios of Atoll issue 4 — crash detection latency, false dead
declarations under message loss and under event-loop stalls, join propagation,
partition-heal reconvergence, message and byte rates — run on
``atoll.membership.SimCluster`` over ``atoll.testing`` (virtual time, seeded), and the
table they print (and write into docs/membership-detection.md).
Never: reads the wall clock for results (only to report how long the run took) or uses
unseeded randomness; every number replays from ``--seeds``.

Usage::

    uv run python sim/swim_scenarios.py --quick
    uv run python sim/swim_scenarios.py --sizes 10 100 500 --seeds 5 \\
        --markdown docs/membership-detection.md --json sim-results.json

``--scenarios`` runs only some scenarios (the tables then show only the rows and cells
that ran). ``--slow-hours H`` runs each slow-node scenario (``stall``, ``slow``) for ``H``
node-hours per cell instead of the default duration, split evenly over the seeds: a rare
event needs more node-hours than the other scenarios. For example the 10-node
slow-inbound comparison of plain SWIM and Lifeguard at 250 node-h per cell::

    uv run python sim/swim_scenarios.py --sizes 10 --seeds 5 --modes swim swim+lifeguard \\
        --scenarios stall slow --slow-hours 250 --json fp10.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from atoll.core import MembershipEvent
from atoll.detection import DetectionConfig
from atoll.membership import MembershipConfig, SimCluster, wire_size
from atoll.testing import LinkFaults, Scheduler, SimNetwork

MODES = ("swim", "swim+lifeguard", "phi")
MARK_BEGIN = "<!-- swim-scenarios:begin -->"
MARK_END = "<!-- swim-scenarios:end -->"


def make_cluster(
    n: int, mode: str, seed: int, drop: float = 0.0
) -> tuple[Scheduler, SimNetwork, SimCluster, list[str]]:
    """A converged cluster of ``n`` nodes on a network that drops ``drop`` of all messages."""
    sched = Scheduler(seed)
    net = SimNetwork(sched, LinkFaults(drop=drop), size_of=wire_size)
    cfg = MembershipConfig.lan(detection=DetectionConfig.lan(mode=mode))
    cluster = SimCluster(sched, net, cfg)
    ids = [f"n{i:03d}" for i in range(n)]
    cluster.bootstrap(ids)
    return sched, net, cluster, ids


class Views:
    """Tracks, from events, which (observer, subject) pairs do not see the subject alive."""

    def __init__(self, cluster: SimCluster) -> None:
        self.bad: set[tuple[str, str]] = set()
        self.dead_events: list[tuple[float, str, str, int]] = []
        self.suspect_events = 0
        self.suspects: dict[str, int] = {}
        cluster.listeners.append(self.on_event)

    def on_event(self, t: float, observer: str, ev: MembershipEvent) -> None:
        key = (observer, ev.member.node_id)
        if ev.kind in ("suspect", "dead", "left", "removed"):
            self.bad.add(key)
            if ev.kind == "suspect":
                self.suspect_events += 1
                subject = ev.member.node_id
                self.suspects[subject] = self.suspects.get(subject, 0) + 1
            if ev.kind == "dead":
                self.dead_events.append((t, observer, ev.member.node_id, ev.member.incarnation))
        elif ev.kind in ("joined", "alive"):
            self.bad.discard(key)


def crash_detection(n: int, mode: str, seed: int) -> dict[str, float | None]:
    """Crash one node in a converged cluster; time until the first / every node marks it dead."""
    sched, _net, cluster, ids = make_cluster(n, mode, seed)
    views = Views(cluster)
    sched.run_for(10.0)
    victim = ids[sched.rng.randrange(n)]
    t0 = sched.now()
    cluster.crash(victim)
    need = n - 1
    seen: set[str] = set()
    first: list[float] = []

    def done() -> bool:
        for t, obs, subj, _inc in views.dead_events[len(first) :]:
            first.append(t)
            if subj == victim:
                seen.add(obs)
        return len(seen) >= need

    ok = sched.run_until_true(done, timeout=180.0)
    times = sorted(t for t, _o, s, _i in views.dead_events if s == victim)
    return {
        "first": times[0] - t0 if times else None,
        "all": (sched.now() - t0) if ok else None,
    }


ANOMALY_GAP = 4.0
"""Mean seconds between the end of one slowness episode and the start of the next."""


def false_deads(
    n: int,
    mode: str,
    seed: int,
    duration: float,
    *,
    drop: float = 0.0,
    anomaly: str | None = None,
) -> dict[str, float]:
    """Run a healthy cluster (lossy, or with one slow node); count dead declarations.

    Every node stays up, so every "dead" any node declares is false. ``anomaly``:

    * ``"stall"`` — node n001's event loop freezes (nothing runs; on waking, overdue
      timers fire before the queued messages are read);
    * ``"slow"`` — node n001's timers run on time but every message it receives is held
      until the episode ends (the Lifeguard paper's slow message processing).

    Episode lengths are exponential with mean 2 x probe timeout, the gaps between them
    exponential with mean :data:`ANOMALY_GAP` (the node is slow ~20% of the time).
    Declarations and suspicions are split by subject: the slow node vs healthy nodes.
    ``episodes`` counts distinct (subject, incarnation) pairs declared dead — one false
    death however many observers declared it; ``healthy_episodes`` those of healthy nodes.
    """
    sched, net, cluster, ids = make_cluster(n, mode, seed, drop)
    views = Views(cluster)
    slow = ids[1]
    if anomaly is not None:
        rng = sched.fork_rng()
        mean = 2 * cluster.config.detection.probe_timeout
        inject = cluster.stall if anomaly == "stall" else cluster.slow_inbound

        def episode() -> None:
            length = rng.expovariate(1 / mean)
            inject(slow, length)
            sched.call_later(length + rng.expovariate(1 / ANOMALY_GAP), episode)

        sched.call_later(rng.expovariate(1 / ANOMALY_GAP), episode)
    warm = 5.0
    sched.run_for(warm)
    base_dead = len(views.dead_events)
    base_susp = dict(views.suspects)
    sent0, bytes0 = net.stats.sent, net.stats.bytes_sent
    sched.run_for(duration)
    events = views.dead_events[base_dead:]
    node_hours = n * duration / 3600.0
    episodes = {(subject, inc) for _t, _o, subject, inc in events}
    about_slow = sum(1 for _t, _o, subject, _i in events if subject == slow)
    susp = {k: v - base_susp.get(k, 0) for k, v in views.suspects.items()}
    susp_slow = susp.get(slow, 0)
    return {
        "observer_declarations": len(events),
        "healthy_declarations": len(events) - about_slow,
        "healthy_episodes": sum(1 for subject, _inc in episodes if subject != slow),
        "slow_declarations": about_slow,
        "per_node_hour": len(events) / node_hours,
        "healthy_per_node_hour": (len(events) - about_slow) / node_hours,
        "slow_per_node_hour": about_slow / node_hours,
        "episodes": len(episodes),
        "suspicions_per_node_hour": sum(susp.values()) / node_hours,
        "healthy_suspicions_per_node_hour": (sum(susp.values()) - susp_slow) / node_hours,
        "slow_suspicions_per_node_hour": susp_slow / node_hours,
        "msgs_per_node_s": (net.stats.sent - sent0) / (n * duration),
        "bytes_per_node_s": (net.stats.bytes_sent - bytes0) / (n * duration),
    }


def join_time(n: int, mode: str, seed: int) -> float | None:
    """A new node joins a converged cluster of ``n - 1``; time until all n see each other alive."""
    sched, _net, cluster, ids = make_cluster(n - 1, mode, seed)
    views = Views(cluster)
    sched.run_for(5.0)
    newcomer = "joiner"
    cluster.add_node(newcomer)
    for i in ids:
        views.bad.add((i, newcomer))
        views.bad.add((newcomer, i))
    t0 = sched.now()
    cluster.join(newcomer, [ids[sched.rng.randrange(len(ids))]])
    ok = sched.run_until_true(lambda: not views.bad, timeout=300.0)
    return sched.now() - t0 if ok else None


def partition_heal(n: int, mode: str, seed: int, cut: float = 30.0) -> float | None:
    """Split the cluster in halves for ``cut`` seconds, heal; time until all see all alive."""
    sched, net, cluster, ids = make_cluster(n, mode, seed)
    views = Views(cluster)
    sched.run_for(5.0)
    half = n // 2
    net.partition([ids[:half], ids[half:]])
    sched.run_for(cut)
    net.heal()
    t0 = sched.now()
    ok = sched.run_until_true(lambda: not views.bad, timeout=600.0)
    return sched.now() - t0 if ok else None


def _stats(values: list[float | None]) -> tuple[float | None, float | None, int]:
    got = [v for v in values if v is not None]
    if not got:
        return None, None, len(values)
    return statistics.median(got), max(got), len(values) - len(got)


FP_SECONDS = {10: 1800.0, 100: 180.0, 500: 30.0}
"""Virtual seconds per false-positive run, by cluster size (``--quick``: a fifth)."""

SCENARIOS: dict[str, dict[str, Any]] = {
    "loss5": {"drop": 0.05},
    "loss20": {"drop": 0.20},
    "stall": {"anomaly": "stall"},
    "slow": {"anomaly": "slow"},
}
SLOW_SCENARIOS = ("stall", "slow")
"""The slow-node scenarios, whose duration ``--slow-hours`` sets."""
ALL_SCENARIOS = ("crash", "join", "heal", *SCENARIOS)


def _fp_seconds(n: int, quick: bool) -> float:
    base = FP_SECONDS.get(n, 600.0 * (10 / n) ** 0.5)
    base = float(base)
    return base / 5 if quick else base


def _durations(n: int, k: int, quick: bool, slow_hours: float | None) -> dict[str, float]:
    """Virtual seconds per seed of each false-positive scenario at size ``n`` with ``k`` seeds."""
    dur = _fp_seconds(n, quick)
    out = dict.fromkeys(SCENARIOS, dur)
    if slow_hours is not None:
        for label in SLOW_SCENARIOS:
            out[label] = slow_hours * 3600.0 / (n * k)
    return out


def _task(task: tuple[str, int, str, int, float]) -> tuple[tuple[str, int, str], Any]:
    kind, n, mode, seed, duration = task
    if kind == "crash":
        res: Any = crash_detection(n, mode, seed)
    elif kind == "join":
        res = join_time(n, mode, 200 + seed)
    elif kind == "heal":
        res = partition_heal(n, mode, 300 + seed)
    else:
        res = false_deads(n, mode, 100 + seed, duration, **SCENARIOS[kind])
    return (kind, n, mode), res


def run(
    sizes: list[int],
    seeds: int,
    quick: bool,
    modes: tuple[str, ...] = MODES,
    jobs: int = 1,
    big_seeds: int = 1,
    scenarios: tuple[str, ...] = ALL_SCENARIOS,
    slow_hours: float | None = None,
) -> dict[str, Any]:
    """Run the ``scenarios`` (on ``jobs`` processes); return the raw and summarised results.

    Sizes of 300 and more use ``big_seeds`` seeds (pure Python: a 500-node run is slow).
    ``slow_hours``: node-hours per cell of each slow-node scenario, split over the seeds
    (default: the same duration as the loss scenarios).
    """
    out: dict[str, Any] = {
        "sizes": sizes,
        "seeds": seeds,
        "quick": quick,
        "scenarios": list(scenarios),
        "slow_hours": slow_hours,
        "rows": [],
    }
    tasks: list[tuple[str, int, str, int, float]] = []
    for n in sizes:
        k = seeds if n < 300 else big_seeds
        durs = _durations(n, k, quick, slow_hours)
        for mode in modes:
            for kind in (s for s in ALL_SCENARIOS if s in scenarios):
                tasks.extend((kind, n, mode, s, durs.get(kind, 0.0)) for s in range(k))
    results: dict[tuple[str, int, str], list[Any]] = {}
    t0 = time.perf_counter()

    def collect(done: int, key: tuple[str, int, str], res: Any) -> None:
        results.setdefault(key, []).append(res)
        kind, n, mode = key
        print(
            f"[{done}/{len(tasks)} {time.perf_counter() - t0:.0f}s] {kind} n={n} {mode}",
            file=sys.stderr,
            flush=True,
        )

    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for i, (key, res) in enumerate(pool.imap_unordered(_task, tasks), 1):
                collect(i, key, res)
    else:
        for i, (key, res) in enumerate(map(_task, tasks), 1):
            collect(i, key, res)
    counts = (
        "observer_declarations",
        "healthy_declarations",
        "slow_declarations",
        "episodes",
        "healthy_episodes",
    )
    for n in sizes:
        k = seeds if n < 300 else big_seeds
        durs = _durations(n, k, quick, slow_hours)
        for mode in modes:
            row: dict[str, Any] = {
                "n": n,
                "mode": mode,
                "seeds": k,
                "fp_seconds": _fp_seconds(n, quick),
            }
            if "crash" in scenarios:
                crash = results[("crash", n, mode)]
                row["first_dead"] = _stats([c["first"] for c in crash])
                row["all_dead"] = _stats([c["all"] for c in crash])
            if "join" in scenarios:
                row["join"] = _stats(results[("join", n, mode)])
            if "heal" in scenarios:
                row["heal"] = _stats(results[("heal", n, mode)])
            for label in SCENARIOS:
                if label not in scenarios:
                    continue
                res = results[(label, n, mode)]
                row[label] = {
                    key: statistics.mean(r[key] for r in res) for key in res[0] if key not in counts
                }
                row[label]["declarations"] = sum(r["observer_declarations"] for r in res)
                row[label]["healthy_declarations"] = sum(r["healthy_declarations"] for r in res)
                row[label]["slow_declarations"] = sum(r["slow_declarations"] for r in res)
                row[label]["episodes"] = sum(r["episodes"] for r in res)
                row[label]["healthy_episodes"] = sum(r["healthy_episodes"] for r in res)
                row[label]["seconds"] = durs[label]
                row[label]["node_hours"] = n * durs[label] * k / 3600
            out["rows"].append(row)
            if any(k in row for k in _MAIN_KEYS):
                print(_row_line(row), file=sys.stderr, flush=True)
            if any(k in row for k in SLOW_SCENARIOS):
                print(_slow_line(row), file=sys.stderr, flush=True)
    return out


def _f(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _t(s: tuple[float | None, float | None, int] | None) -> str:
    if s is None:  # scenario not run (--scenarios)
        return "—"
    med, mx, missed = s
    txt = f"{_f(med)} / {_f(mx)}"
    return txt + (f" ({missed} never)" if missed else "")


def _g(row: dict[str, Any], label: str, key: str) -> float | None:
    """``row[label][key]``, or None if ``label`` did not run."""
    return row[label][key] if label in row else None


def _row_line(row: dict[str, Any]) -> str:
    return (
        f"| {row['n']} | {row['mode']} | {_t(row.get('first_dead'))} | "
        f"{_t(row.get('all_dead'))} | "
        f"{_f(_g(row, 'loss5', 'per_node_hour'), 2)} | "
        f"{_f(_g(row, 'loss20', 'per_node_hour'), 2)} | "
        f"{_t(row.get('join'))} | {_t(row.get('heal'))} | "
        f"{_f(_g(row, 'loss5', 'msgs_per_node_s'))} / "
        f"{_f(_g(row, 'loss5', 'bytes_per_node_s'), 0)} |"
    )


def _node_hours(row: dict[str, Any]) -> str:
    """Node-hours per cell of the slow-node scenarios that ran ("a / b" if they differ)."""
    hours = [f"{row[label]['node_hours']:.0f}" for label in SLOW_SCENARIOS if label in row]
    return " / ".join(dict.fromkeys(hours)) or "—"


def _slow_line(row: dict[str, Any]) -> str:
    cells = [str(row["n"]), row["mode"]]
    for label in SLOW_SCENARIOS:
        cells += [
            f"{_f(_g(row, label, 'healthy_per_node_hour'), 2)} / "
            f"{_f(_g(row, label, 'slow_per_node_hour'), 2)}",
            f"{_f(_g(row, label, 'healthy_suspicions_per_node_hour'), 1)} / "
            f"{_f(_g(row, label, 'slow_suspicions_per_node_hour'), 1)}",
        ]
    cells.append(_node_hours(row))
    return "| " + " | ".join(cells) + " |"


_MAIN_KEYS = ("first_dead", "all_dead", "join", "heal", "loss5", "loss20")


def table(results: dict[str, Any]) -> str:
    """The markdown tables of ``results``: the main one, then the slow-node one."""
    head = (
        "| nodes | detector | crash: first dead s (median / max) | crash: all dead s | "
        "false dead /node-h, 5% loss | 20% loss | join: all know s | "
        "partition heal: reconverge s | msgs / bytes per node-s (5% loss) |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    slow_head = (
        "| nodes | detector | loop stalls: false dead /node-h (healthy / stalled node) | "
        "loop stalls: false suspicions /node-h (healthy / stalled) | "
        "slow inbound: false dead /node-h (healthy / slow node) | "
        "slow inbound: false suspicions /node-h (healthy / slow) | node-h per cell |\n"
        "|---|---|---|---|---|---|---|"
    )
    rows = results["rows"]
    main = [_row_line(r) for r in rows if any(k in r for k in _MAIN_KEYS)]
    slow = [_slow_line(r) for r in rows if any(k in r for k in SLOW_SCENARIOS)]
    parts = [head, *main] if main else []
    if slow:
        parts += ["", slow_head, *slow] if parts else [slow_head, *slow]
    return "\n".join(parts)


def _describe(results: dict[str, Any]) -> str:
    """How long each size ran; detectors named only where they ran differently."""
    by_size: dict[int, dict[str, list[str]]] = {}
    for r in results["rows"]:
        fp = [label for label in SCENARIOS if label in r]
        uniform = all(r[label].get("seconds", r["fp_seconds"]) == r["fp_seconds"] for label in fp)
        if uniform:
            hours = r["seeds"] * r["n"] * r["fp_seconds"] / 3600
            txt = (
                f"false-positive runs {r['fp_seconds']:.0f} s virtual = {hours:.0f} node-h per cell"
            )
        else:
            txt = ", ".join(
                f"{label} {r[label]['seconds']:.0f} s virtual = "
                f"{r[label]['node_hours']:.0f} node-h per cell"
                for label in fp
            )
        txt = f"{r['seeds']} seed(s)" + (f", {txt}" if fp else "")
        by_size.setdefault(r["n"], {}).setdefault(txt, []).append(r["mode"])
    parts = []
    for n, texts in by_size.items():
        if len(texts) == 1:
            parts.append(f"{n} nodes: {next(iter(texts))}")
        else:
            parts += [f"{n} nodes, {' + '.join(modes)}: {txt}" for txt, modes in texts.items()]
    return "; ".join(parts) + ("; quick" if results["quick"] else "")


def write_markdown(path: Path, results: dict[str, Any], command: str) -> None:
    """Replace the generated block of ``path`` (or append one) with the new table."""
    block = (
        f"{MARK_BEGIN}\n_Generated by `{command}` ({_describe(results)})._\n\n"
        f"{table(results)}\n{MARK_END}"
    )
    text = path.read_text() if path.exists() else ""
    if MARK_BEGIN in text and MARK_END in text:
        pre, rest = text.split(MARK_BEGIN, 1)
        _, post = rest.split(MARK_END, 1)
        text = pre + block + post
    else:
        text = text + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


def _command(argv: list[str] | None) -> str:
    """The command line that produced a run, without output options."""
    args = list(argv if argv is not None else sys.argv[1:])
    for opt in ("--markdown", "--json"):
        if opt in args:
            i = args.index(opt)
            del args[i : i + 2]
    return " ".join(["python sim/swim_scenarios.py", *args])


def _commands(part: dict[str, Any]) -> list[str]:
    if part.get("commands"):
        return list(part["commands"])
    # JSON written before commands were recorded: rebuild the equivalent command.
    sizes = " ".join(str(n) for n in part["sizes"])
    return [f"python sim/swim_scenarios.py --sizes {sizes} --seeds {part['seeds']}"]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    p.add_argument("--seeds", type=int, default=5, help="seeds per measurement")
    p.add_argument("--quick", action="store_true", help="shorter runs, sizes 10 and 100")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--big-seeds", type=int, default=1, help="seeds for sizes >= 300")
    p.add_argument(
        "--scenarios",
        nargs="+",
        default=list(ALL_SCENARIOS),
        choices=ALL_SCENARIOS,
        help="run only these scenarios (default: all)",
    )
    p.add_argument(
        "--slow-hours",
        type=float,
        metavar="H",
        help="node-hours per cell of each slow-node scenario (stall, slow), split over the\n"
        "seeds (default: as long as the loss scenarios)",
    )
    p.add_argument("--markdown", type=Path, help="write the table into this file")
    p.add_argument("--json", type=Path, help="write raw results as JSON here")
    p.add_argument(
        "--from-json", type=Path, nargs="+", help="do not simulate: tabulate earlier --json files"
    )
    args = p.parse_args(argv)
    sizes = args.sizes if not args.quick or args.sizes != [10, 100, 500] else [10, 100]
    seeds = args.seeds if not args.quick else min(args.seeds, 3)
    t0 = time.perf_counter()
    if args.from_json:
        parts = [json.loads(p.read_text()) for p in args.from_json]
        results = {
            "sizes": [n for part in parts for n in part["sizes"]],
            "seeds": max(part["seeds"] for part in parts),
            "quick": any(part["quick"] for part in parts),
            "rows": [r for part in parts for r in part["rows"]],
            "commands": [c for part in parts for c in _commands(part)],
        }
    else:
        results = run(
            sizes,
            seeds,
            args.quick,
            tuple(args.modes),
            jobs=args.jobs,
            big_seeds=args.big_seeds,
            scenarios=tuple(args.scenarios),
            slow_hours=args.slow_hours,
        )
    if not args.from_json:
        results["commands"] = [_command(argv)]
    results["wall_seconds"] = time.perf_counter() - t0
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.markdown:
        write_markdown(args.markdown, results, "` + `".join(results["commands"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
