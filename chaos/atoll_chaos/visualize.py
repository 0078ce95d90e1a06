"""A readable picture of a failing history: an HTML page with one SVG timeline per key.

Owns: rendering ops (one lane per client process, a bar from call to return, unknown
outcomes fading to the right edge), the fault windows of the run as shaded bands, the
longest partial linearization as numbers on the bars, and the ops the checker could not
place outlined in red.
Never: decides anything; it draws what the checker and the nemesis recorded.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .history import Op

__all__ = ["FaultWindow", "render_html"]

_COLORS = {"get": "#4e79a7", "put": "#59a14f", "delete": "#b07aa1", "cas": "#f28e2b"}


@dataclass(frozen=True)
class FaultWindow:
    """A fault that was active from ``start`` to ``end`` (monotonic seconds)."""

    name: str
    start: float
    end: float


def _svg(
    title: str,
    ops: Sequence[Op],
    faults: Sequence[FaultWindow],
    order: dict[int, int],
    stuck: set[int],
) -> str:
    if not ops:
        return f"<p>{html.escape(title)}: no ops</p>"
    t0 = min(op.call for op in ops)
    finite = [op.ret for op in ops if op.ret != math.inf]
    t1 = max([*finite, *(op.call for op in ops)]) + 1e-3
    t1 += (t1 - t0) * 0.15  # room for unknown outcomes to trail off
    procs = sorted({op.process for op in ops})
    lane = {p: i for i, p in enumerate(procs)}
    width, left, lane_h = 1200, 70, 34
    height = 30 + lane_h * len(procs)

    def x(t: float) -> float:
        return left + (min(t, t1) - t0) / (t1 - t0) * (width - left - 10)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="monospace" font-size="11">',
        '<defs><linearGradient id="fade"><stop offset="0" stop-color="#999"/>'
        '<stop offset="1" stop-color="#fff"/></linearGradient></defs>',
    ]
    for fw in faults:
        if fw.end < t0 or fw.start > t1:
            continue
        a, b = x(max(fw.start, t0)), x(min(fw.end, t1))
        out.append(
            f'<rect x="{a:.1f}" y="0" width="{max(1.0, b - a):.1f}" height="{height}" '
            f'fill="#fde0dd" opacity="0.6"><title>{html.escape(fw.name)}</title></rect>'
            f'<text x="{a + 2:.1f}" y="10" fill="#c51b8a">{html.escape(fw.name)}</text>'
        )
    for p in procs:
        y = 20 + lane[p] * lane_h
        out.append(f'<text x="4" y="{y + 15}">p{p}</text>')
    for op in ops:
        y = 20 + lane[op.process] * lane_h
        a = x(op.call)
        b = x(op.ret) if op.ret != math.inf else width - 10
        fill = "url(#fade)" if op.ret == math.inf else _COLORS[op.f]
        stroke = ' stroke="red" stroke-width="3"' if op.id in stuck else ""
        label = op.describe()
        if op.id in order:
            label = f"[{order[op.id]}] {label}"
        tip = (
            f"#{op.id} p{op.process} {op.describe()} call={op.call:.6f} "
            f"ret={'unknown' if op.ret == math.inf else f'{op.ret:.6f}'}"
        )
        out.append(
            f"<g><title>{html.escape(tip)}</title>"
            f'<rect x="{a:.1f}" y="{y}" width="{max(2.0, b - a):.1f}" height="22" rx="3" '
            f'fill="{fill}" opacity="0.85"{stroke}/>'
            f'<text x="{a + 3:.1f}" y="{y + 15}">{html.escape(label)}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


def render_html(
    path: Path,
    *,
    title: str,
    sections: Sequence[tuple[str, Sequence[Op], Sequence[int], set[int]]],
    faults: Sequence[FaultWindow] = (),
    notes: Sequence[str] = (),
) -> Path:
    """Write an HTML page; each section is (heading, ops, linearization order, stuck ids)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em} pre{background:#f6f6f6;padding:.5em}"
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>One lane per client process; a bar spans call to return. Faded bars had an "
        "unknown outcome (may take effect any time after the call, or never). "
        "<b>[n]</b> is the position in the longest linearization the checker found; "
        "<span style='color:red'>red outlines</span> are ops with a known outcome it could "
        "not place. Pink bands are faults.</p>",
    ]
    if notes:
        parts.append("<pre>" + html.escape("\n".join(notes)) + "</pre>")
    for heading, ops, order, stuck in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        pos = {op_id: i + 1 for i, op_id in enumerate(order)}
        parts.append(_svg(heading, ops, faults, pos, stuck))
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
