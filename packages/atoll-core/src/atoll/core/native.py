"""Optional native builds: hot pure-Python modules compiled with mypyc.

Owns: finding, building and switching on a package's compiled modules. A package opts
in from its ``__init__`` (before it imports the modules named)::

    from atoll.core import native
    native.activate(__name__, __path__, ("_core", "_log"), deps=("atoll.core",))

``activate`` puts the compiled modules first on the package's ``__path__`` when a build
exists for exactly these sources, and otherwise changes nothing: the pure-Python modules
are always there and always correct. ``python -m atoll.core.native build`` compiles the
opted-in packages (it needs mypy, setuptools and a C compiler; pure Python needs none).

A build is keyed by a hash of every source file of the package and of its ``deps``
packages (a compiled module may rely on what it was type-checked against), the Python
ABI and the machine, and lives in ``$ATOLL_NATIVE_DIR`` (default
``~/.cache/atoll/native``). Editing any of those sources, or switching interpreters,
falls back to pure Python until the next build: a stale build is never used.
``ATOLL_NATIVE=0`` switches native modules off.

Never: compiles anything at import time, or imports a half-working build (a compiled
module that fails to import is dropped and the pure-Python one used).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import MutableSequence, Sequence
from pathlib import Path

import attrs

__all__ = [
    "DEFAULT_PACKAGES",
    "NativeBuildError",
    "NativePackage",
    "activate",
    "build",
    "cache_dir",
    "main",
    "status",
]

DEFAULT_PACKAGES = ("atoll.core", "atoll.election", "atoll.replication", "atoll.coordination")
"""The packages that opt in (``python -m atoll.core.native build`` builds these)."""

KEEP_BUILDS = 3
"""Builds kept per package in the cache (older ones are deleted by the next build)."""

_FORMAT = 1
_OFF = {"0", "off", "false", "no"}


class NativeBuildError(RuntimeError):
    """A native build failed (missing compiler or tool, or mypyc refused the code)."""


@attrs.define
class NativePackage:
    """What :func:`activate` found for one package."""

    package: str
    modules: tuple[str, ...]
    source_dir: str
    deps: tuple[str, ...]
    key: str = ""
    active: bool = False
    reason: str = ""
    """Why the package runs pure Python (empty when native)."""


_registry: dict[str, NativePackage] = {}


def cache_dir() -> Path:
    """Where builds live: ``$ATOLL_NATIVE_DIR``, else ``$XDG_CACHE_HOME/atoll/native``."""
    explicit = os.environ.get("ATOLL_NATIVE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "atoll", "native")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"package {package!r} not found")
    return Path(spec.origin).parent


def _key(package: str, source_dir: Path, deps: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(
        f"{_FORMAT}|{package}|{sys.implementation.cache_tag}|{platform.machine()}|"
        f"{sys.platform}".encode()
    )
    dirs = [(package, source_dir)] + [(d, _package_dir(d)) for d in deps]
    for name, d in dirs:
        for f in sorted(d.rglob("*.py")):
            h.update(f"\0{name}/{f.relative_to(d).as_posix()}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:24]


def _group(package: str) -> str:
    return package.replace(".", "_") + "_native"


def _disabled() -> bool:
    return os.environ.get("ATOLL_NATIVE", "1").strip().lower() in _OFF


def activate(
    package: str,
    path: MutableSequence[str],
    modules: Sequence[str],
    *,
    deps: Sequence[str] = (),
) -> bool:
    """Use the compiled ``modules`` of ``package`` if a build of exactly these sources
    exists; returns whether it did. ``path`` is the package's ``__path__``."""
    source_dir = Path(path[-1])
    info = NativePackage(package, tuple(modules), str(source_dir), tuple(deps))
    _registry[package] = info
    if _disabled():
        info.reason = "switched off (ATOLL_NATIVE=0)"
        return False
    try:
        info.key = _key(package, source_dir, deps)
    except (OSError, ModuleNotFoundError) as exc:
        info.reason = f"cannot hash the sources: {exc}"
        return False
    root = cache_dir() / info.key
    pkg_dir = root.joinpath(*package.split("."))
    if not (root / "manifest.json").is_file():
        info.reason = "not built (python -m atoll.core.native build)"
        return False
    path.insert(0, str(pkg_dir))
    added_root = str(root) not in sys.path
    if added_root:
        sys.path.append(str(root))
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    before = set(sys.modules)
    try:
        for m in modules:
            mod = importlib.import_module(f"{package}.{m}")
            if not str(getattr(mod, "__file__", "")).endswith(suffixes):
                raise ImportError(f"{package}.{m} has no compiled module in {pkg_dir}")
    except Exception as exc:  # a broken build must never stop the package importing
        path.remove(str(pkg_dir))
        if added_root:
            sys.path.remove(str(root))
        # Forget everything of the package this attempt imported (a pure module may
        # have bound a compiled one), and the build's shared library.
        for name in set(sys.modules) - before:
            if name.startswith(package + ".") or name == _group(package) + "__mypyc":
                del sys.modules[name]
        info.reason = f"build at {root} does not import: {exc!r}"
        return False
    info.active = True
    return True


def status() -> dict[str, str]:
    """Each opted-in package imported so far: ``"native"`` or why it runs pure Python."""
    return {p: ("native" if i.active else i.reason) for p, i in sorted(_registry.items())}


_SETUP = textwrap.dedent(
    """
    import sys
    from mypyc.build import mypycify
    from setuptools import setup

    files = sys.argv[1:]
    setup(
        name="atoll-native",
        ext_modules=mypycify(
            ["--explicit-package-bases", *files], group_name={group!r}, opt_level="3"
        ),
        script_args=["build_ext", "--inplace", "--quiet"],
    )
    """
)


def build(packages: Sequence[str] = DEFAULT_PACKAGES, *, force: bool = False) -> list[Path]:
    """Compile each package's opted-in modules (unless already built); returns the
    build directories. Raises :class:`NativeBuildError` with the compiler's output."""
    out: list[Path] = []
    for package in packages:
        importlib.import_module(package)
        info = _registry.get(package)
        if info is None:
            raise NativeBuildError(f"package {package!r} does not opt in to native builds")
        source_dir = Path(info.source_dir)
        key = _key(package, source_dir, info.deps)
        root = cache_dir() / key
        if (root / "manifest.json").is_file() and not force:
            out.append(root)
            continue
        out.append(_compile(package, source_dir, info.modules, key, root))
    return out


def _compile(
    package: str, source_dir: Path, modules: tuple[str, ...], key: str, root: Path
) -> Path:
    for tool, hint in (("mypyc", "mypy"), ("setuptools", "setuptools")):
        if importlib.util.find_spec(tool) is None:
            raise NativeBuildError(
                f"a native build needs {hint} in this environment (pip install {hint}); "
                f"{package} keeps running pure Python"
            )
    rel = Path(*package.split("."))
    with tempfile.TemporaryDirectory(prefix="atoll-native-") as tmp:
        work = Path(tmp)
        shutil.copytree(
            source_dir, work / rel, ignore=shutil.ignore_patterns("__pycache__", "*.so")
        )
        files = [str(rel / f"{m}.py") for m in modules]
        proc = subprocess.run(
            [sys.executable, "-c", _SETUP.format(group=_group(package)), *files],
            cwd=work,
            env={**os.environ, "MYPYPATH": str(work)},
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
            raise NativeBuildError(f"compiling {package} failed:\n{tail}")
        root.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root.parent))
        try:
            (stage / rel).mkdir(parents=True)
            built: list[str] = []
            for m in modules:
                found = sorted((work / rel).glob(f"{m}.*.so")) + sorted(
                    (work / rel).glob(f"{m}.*.pyd")
                )
                if not found:
                    raise NativeBuildError(f"compiling {package}: no extension for {m}")
                shutil.copy2(found[0], stage / rel / found[0].name)
                built.append(found[0].name)
            for lib in work.glob(f"{_group(package)}__mypyc.*"):
                shutil.copy2(lib, stage / lib.name)
                built.append(lib.name)
            manifest = {
                "package": package,
                "modules": list(modules),
                "files": built,
                "source": str(source_dir),
            }
            (stage / "manifest.json").write_text(json.dumps(manifest, indent=1))
            if root.exists():
                shutil.rmtree(root)
            os.replace(stage, root)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    _prune(package, keep=root, source=str(source_dir))
    return root


def _prune(package: str, *, keep: Path, source: str = "", builds: int = KEEP_BUILDS) -> None:
    """Delete all but the ``builds`` newest builds of ``package`` from the same
    ``source`` directory (never ``keep``).

    Older builds are not deleted at once: one whose sources come back (a branch switched
    back) is used again without a rebuild. Builds of other checkouts sharing the cache
    (another clone, a worktree) are left alone: pruning them made those checkouts fall
    back to pure Python without a word. A build whose manifest names no source (written
    before sources were recorded) counts as this checkout's.
    """
    found: list[tuple[float, Path]] = []
    for d in keep.parent.iterdir():
        m = d / "manifest.json"
        try:
            doc = json.loads(m.read_text())
            if d != keep and doc.get("package") == package and doc.get("source", source) == source:
                found.append((m.stat().st_mtime, d))
        except (OSError, ValueError, AttributeError):
            continue
    found.sort(reverse=True)
    for _, d in found[max(0, builds - 1) :]:
        shutil.rmtree(d, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m atoll.core.native build|status``."""
    parser = argparse.ArgumentParser(prog="python -m atoll.core.native", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile the opted-in packages with mypyc")
    b.add_argument("packages", nargs="*", default=list(DEFAULT_PACKAGES))
    b.add_argument("--force", action="store_true", help="rebuild even if a build exists")
    s = sub.add_parser("status", help="which packages would run native")
    s.add_argument("packages", nargs="*", default=list(DEFAULT_PACKAGES))
    args = parser.parse_args(argv)
    if args.cmd == "build":
        try:
            roots = build(args.packages, force=args.force)
        except NativeBuildError as exc:
            print(f"native build failed: {exc}", file=sys.stderr)
            return 1
        for package, root in zip(args.packages, roots, strict=True):
            print(f"{package}: built in {root}")
        return 0
    for package in args.packages:
        importlib.import_module(package)
    for package, state in status().items():
        print(f"{package}: {state}")
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this copy's: the packages register with
    # ``atoll.core.native`` when they import, and ``__main__`` is a second module object.
    from atoll.core.native import main as _main

    raise SystemExit(_main())
