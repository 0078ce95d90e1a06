"""What every ``bench/bench_*.py`` script writes: its figures as JSON and a Markdown table.

Owns: the JSON document (``{"meta": ..., "results": [...]}``) and the Markdown page (a
title, one paragraph on how the figures were made, one table, a row per result).
Never: measures anything or decides what a column means; the scripts pass both in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]
Column = tuple[str, Callable[[Row], object]]
"""A column's heading and how to show one result in it."""


def write_results(
    json_path: Path | None,
    markdown_path: Path | None,
    *,
    meta: dict[str, Any],
    rows: Sequence[Row],
    title: str,
    intro: str,
    columns: Sequence[Column],
) -> None:
    """Write ``rows`` under ``meta`` as JSON to ``json_path`` and as a table under
    ``title`` and ``intro`` to ``markdown_path`` (either may be None: not written)."""
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"meta": meta, "results": list(rows)}, indent=2))
    if markdown_path is not None:
        lines = [
            f"# {title}",
            "",
            intro,
            "",
            "| " + " | ".join(name for name, _ in columns) + " |",
            "|" + "---|" * len(columns),
        ]
        for r in rows:
            lines.append("| " + " | ".join(str(show(r)) for _, show in columns) + " |")
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text("\n".join(lines) + "\n")
