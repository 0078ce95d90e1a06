"""Every hookspec is documented in docs/hooks.md (datasette's trick: docs never rot)."""

from __future__ import annotations

import inspect
from pathlib import Path

from atoll.core import hookspecs

DOCS = Path(__file__).resolve().parents[3] / "docs" / "hooks.md"


def test_every_hookspec_is_documented() -> None:
    text = DOCS.read_text()
    names = [
        n for n, _ in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("atoll_")
    ]
    assert names, "no hookspecs found"
    missing = [n for n in names if f"## `{n}`" not in text]
    assert not missing, (
        f"undocumented hooks in docs/hooks.md: {missing}; run tools/gen_hook_docs.py"
    )


def test_every_hookspec_has_a_docstring() -> None:
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("atoll_"):
            assert (fn.__doc__ or "").strip(), f"{name} has no docstring"
