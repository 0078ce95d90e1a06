"""``python chaos/run.py [--long] [--only NAME ...] [--out DIR]``: run the chaos suites.

Owns: choosing the suite, running its scenarios one after another, printing each
scenario's report and exiting non-zero if any failed.
Never: hides a failure (a harness error or an undecided check is a failure too).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from atoll_chaos.runner import LONG, SHORT, run_scenario


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="chaos/run.py", description=__doc__)
    ap.add_argument("--long", action="store_true", help="every scenario, longer")
    ap.add_argument("--only", nargs="*", default=[], help="run only these scenario names")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("chaos-results") / time.strftime("%Y%m%d-%H%M%S"),
        help="artifact directory (default: chaos-results/<timestamp>)",
    )
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument(
        "--storage",
        default="lmdb",
        choices=["lmdb", "rocksdb"],
        help="the nodes' storage backend (default: lmdb, the embedded default)",
    )
    args = ap.parse_args(argv)
    suite = (*SHORT, *LONG) if args.long else SHORT
    if args.only:
        every = {s.name: s for s in (*SHORT, *LONG)}
        unknown = [n for n in args.only if n not in every]
        if unknown:
            ap.error(f"unknown scenario(s) {unknown}; known: {sorted(every)}")
        suite = tuple(every[n] for n in args.only)
    if args.list:
        for s in suite:
            print(f"{s.name:14} {s.nodes} nodes {s.mode:6} {', '.join(s.faults)}")
        return 0
    out = args.out.resolve()
    print(f"chaos: {len(suite)} scenario(s) on {args.storage}, artifacts in {out}", flush=True)
    failed = []
    for sc in suite:
        res = run_scenario(sc, out, storage=args.storage)
        print(res.report(), flush=True)
        if not res.passed:
            failed.append(sc.name)
    print(f"chaos: {len(suite) - len(failed)}/{len(suite)} passed", flush=True)
    if failed:
        print(f"chaos: FAILED: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
