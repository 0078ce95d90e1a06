"""The detection modules are pure: no IO, clock or global-randomness imports (DESIGN.md 3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import atoll.detection

FORBIDDEN = {"anyio", "asyncio", "time", "random", "socket", "trio", "threading", "os"}
SRC = Path(atoll.detection.__file__).parent
MODULES = sorted(SRC.glob("*.py"))


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_there_are_modules_to_check() -> None:
    assert len(MODULES) >= 6


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_nothing_impure(path: Path) -> None:
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}; pure detection code must not"


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("import time\nfrom random import choice\n")
    assert imported_roots(p) & FORBIDDEN == {"time", "random"}
