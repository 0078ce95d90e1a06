"""The placement engine is pure: no module of it may import IO, clocks or randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import atoll.placement

FORBIDDEN = {"anyio", "asyncio", "time", "random", "socket", "threading", "datetime", "os"}
SRC = Path(atoll.placement.__file__).parent


def forbidden_imports(source: str) -> set[str]:
    """Top-level names of forbidden modules that ``source`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & FORBIDDEN
    return found


def test_the_checker_catches_forbidden_imports() -> None:
    assert forbidden_imports("import random") == {"random"}
    assert forbidden_imports("from time import monotonic") == {"time"}
    assert forbidden_imports("def f():\n    import asyncio.tasks\n") == {"asyncio"}
    assert forbidden_imports("from . import time") == set()
    assert forbidden_imports("import math, xxhash") == set()


def test_no_placement_module_imports_io_time_or_random() -> None:
    modules = sorted(SRC.glob("*.py"))
    assert {m.name for m in modules} >= {"_core.py", "_topology.py", "_hashing.py"}
    offenders = {m.name: found for m in modules if (found := forbidden_imports(m.read_text()))}
    assert offenders == {}
