"""Write docs/hooks.md from the hookspec docstrings in atoll.core.hookspecs.

Usage: ``uv run python tools/gen_hook_docs.py`` (``--check`` exits 1 if the file is stale).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from atoll.core import hookspecs

OUT = Path(__file__).resolve().parent.parent / "docs" / "hooks.md"


def render() -> str:
    """Return the Markdown reference for every hookspec."""
    lines = [
        "# Hook reference",
        "",
        "Generated from `atoll.core.hookspecs` by `tools/gen_hook_docs.py`; do not edit by hand.",
        "",
        inspect.cleandoc(hookspecs.__doc__ or ""),
        "",
    ]
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("atoll_"):
            continue
        opts = getattr(fn, "atoll_spec", {}) or {}
        kind = "provider (firstresult)" if opts.get("firstresult") else "collect / event"
        sig = inspect.signature(fn)
        lines += [
            f"## `{name}`",
            "",
            f"```python\ndef {name}{sig}\n```",
            "",
            f"*Kind:* {kind}",
            "",
            inspect.cleandoc(fn.__doc__ or ""),
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if docs/hooks.md is stale")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run uv run python tools/gen_hook_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
