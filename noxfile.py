"""Every developer task in one place: ``nox -l`` lists them.

Sessions
--------
tests       every package's and plugin's tests in one environment (the README's test command)
package     one distribution alone, in an environment holding only what it declares
lint        ruff check + ruff format --check
typecheck   mypy --strict on every distribution's src/
docs        checks docs/hooks.md against the hookspecs
sim         deterministic simulations, many seeds (``nox -s sim -- --seeds 200``)
native      compile the Raft core and the KV apply with mypyc, then test them compiled
bench       benchmarks: print figures, write bench-results/*.json and docs/bench/*.md
chaos       fault injection against real node processes + linearizability checking
"""

from __future__ import annotations

import os
import re
import shutil
import sysconfig
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

DISTS = sorted([*ROOT.glob("packages/atoll-*"), *ROOT.glob("plugins/atoll-*")])
DIST_BY_NAME = {p.name: p for p in DISTS}
TEST_TOOLS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100"]


def _sync_workspace(session: nox.Session) -> None:
    """Install the whole workspace (locked) into this session's virtualenv."""
    session.run_install(
        "uv",
        "sync",
        "--all-packages",
        "--locked",
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


def _local_deps(name: str, seen: set[str] | None = None) -> set[str]:
    """The atoll-* distributions ``name`` needs (dependencies and its test extra), transitively."""
    seen = set() if seen is None else seen
    if name in seen:
        return seen
    seen.add(name)
    meta = tomllib.loads((DIST_BY_NAME[name] / "pyproject.toml").read_text())["project"]
    reqs = list(meta.get("dependencies", []))
    reqs += meta.get("optional-dependencies", {}).get("test", [])
    for req in reqs:
        dep = re.split(r"[\s;\[<>=~!]", req, maxsplit=1)[0]
        if dep in DIST_BY_NAME:
            _local_deps(dep, seen)
    return seen


@nox.session
def tests(session: nox.Session) -> None:
    """All unit, property, conformance and default-seed simulation tests."""
    _sync_workspace(session)
    paths = [str(p / "tests") for p in DISTS if (p / "tests").is_dir()]
    paths.append(str(ROOT / "integration"))
    session.run("pytest", "-q", "-p", "no:cacheprovider", *paths, *session.posargs)


@nox.session
@nox.parametrize("dist", [p.name for p in DISTS])
def package(session: nox.Session, dist: str) -> None:
    """Test one distribution alone: an undeclared import of a sibling fails here."""
    needed = sorted(_local_deps(dist))
    extras = {n: ("[test]" if n == dist and _has_test_extra(n) else "") for n in needed}
    args = []
    for n in needed:
        args += ["-e", f"{DIST_BY_NAME[n]}{extras[n]}"]
    session.install(*TEST_TOOLS, *args)
    tests_dir = DIST_BY_NAME[dist] / "tests"
    if not any(tests_dir.rglob("test_*.py")):
        session.log(f"{dist} has no tests yet; import check only")
        mod = _import_name(dist)
        session.run("python", "-c", f"import {mod}")
        return
    session.run("pytest", "-q", "-p", "no:cacheprovider", str(tests_dir), *session.posargs)


def _has_test_extra(name: str) -> bool:
    meta = tomllib.loads((DIST_BY_NAME[name] / "pyproject.toml").read_text())["project"]
    return "test" in meta.get("optional-dependencies", {})


def _import_name(dist: str) -> str:
    short = dist.removeprefix("atoll-")
    for kind in ("storage", "transport"):
        if short.startswith(kind + "-"):
            return f"atoll.{kind}.{short.removeprefix(kind + '-')}"
    return f"atoll.{short}"


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every distribution's src/."""
    _sync_workspace(session)
    srcs = [str(p / "src") for p in DISTS if (p / "src").is_dir()]
    session.run("mypy", *srcs, env={"MYPYPATH": os.pathsep.join(srcs)})


@nox.session
def docs(session: nox.Session) -> None:
    """Check generated docs are current."""
    _sync_workspace(session)
    session.run("python", "tools/gen_hook_docs.py", "--check")


@nox.session
def sim(session: nox.Session) -> None:
    """Deterministic simulations with many seeds.

    ``-- --seeds N`` sets how many Raft schedules run (default 200); ``-- --full`` runs the
    membership measurements at every size (10, 100, 500 nodes; slow) instead of ``--quick``.
    """
    _sync_workspace(session)
    seeds = "200"
    args = list(session.posargs)
    full = "--full" in args
    if full:
        args.remove("--full")
    if "--seeds" in args:
        i = args.index("--seeds")
        seeds = args[i + 1]
        del args[i : i + 2]
    sim_dirs = [str(p) for p in ROOT.glob("packages/*/tests/sim") if p.is_dir()]
    if sim_dirs:
        session.run(
            "pytest", "-q", "-p", "no:cacheprovider", *sim_dirs, f"--sim-seeds={seeds}", *args
        )
    for script in sorted(ROOT.glob("sim/*.py")):
        # Only a full run rewrites the table in docs/; --quick just prints its figures.
        extra = ["--markdown", "docs/membership-detection.md"] if full else ["--quick"]
        session.run("python", str(script), *extra)


@nox.session
def native(session: nox.Session) -> None:
    """Build the native modules (``python -m atoll.core.native build``), check that every
    opted-in package imports them, and run the tests that exercise them compiled: the
    packages that hold or drive them, and the multi-process integration tests."""
    _sync_workspace(session)
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        why = f"no C compiler ({cc}): native builds need one; pure Python does not"
        if os.environ.get("ATOLL_NATIVE_REQUIRED") == "1":
            session.error(why + " (.ci/run installs gcc)")  # CI must not skip it silently
        session.skip(why)
    session.run("python", "-m", "atoll.core.native", "build")
    session.run(
        "python",
        "-c",
        "import atoll.core, atoll.election, atoll.replication, atoll.coordination; "
        "from atoll.core import native; "
        "s = native.status(); print(s); assert set(s.values()) == {'native'}, s",
    )
    dists = [
        "atoll-core",
        "atoll-election",
        "atoll-replication",
        "atoll-coordination",
        "atoll-client",
        "atoll-node",
        "atoll-transport-tcp",
    ]
    paths = [str(DIST_BY_NAME[d] / "tests") for d in dists]
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *paths,
        str(ROOT / "integration"),
        *session.posargs,
        env={"ATOLL_NATIVE_REQUIRED": "1"},  # the integration test checks every node
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks print figures and write JSON + Markdown; they never assert timings."""
    _sync_workspace(session)
    # The Raft core compiled with mypyc (a no-op when already built; on failure, e.g.
    # no C compiler, the figures are pure Python and the table says so).
    session.run("python", "-m", "atoll.core.native", "build", success_codes=[0, 1])
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (ROOT / "docs" / "bench").mkdir(parents=True, exist_ok=True)
    for script in sorted(ROOT.glob("bench/bench_*.py")):
        stem = script.stem.removeprefix("bench_")
        session.run(
            "python",
            str(script),
            "--json",
            str(out / f"{stem}.json"),
            "--markdown",
            str(ROOT / "docs" / "bench" / f"{stem}.md"),
            *session.posargs,
        )


@nox.session
def chaos(session: nox.Session) -> None:
    """Chaos suites + linearizability checker against real node processes.

    ``nox -s chaos`` runs the checker's and harness's own tests, then the short suite (a
    few minutes); ``nox -s chaos -- --long`` runs every scenario. Other arguments go to
    ``chaos/run.py`` (``--only NAME``, ``--out DIR``, ``--list``). Artifacts (histories,
    checker output, failure timelines, node logs) land in ``chaos-results/``.
    """
    _sync_workspace(session)
    session.run("pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "chaos" / "tests"))
    session.run("python", str(ROOT / "chaos" / "run.py"), *session.posargs)
