"""Skewing a node's clock while it runs.

Owns: :func:`write_skew`, which atomically rewrites the small JSON file
(``{"rate": 0.95, "offset_ms": 0}``) that a node started with ``ATOLL_TEST_CLOCK_FILE``
reads its Raft lease clock from (:class:`atoll.core.FileClock`).
Never: goes backwards in time (the clock itself refuses to).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from atoll.core import TEST_CLOCK_ENV as CLOCK_ENV
from atoll.core import FileClock

__all__ = ["CLOCK_ENV", "FileClock", "write_skew"]


def write_skew(path: Path, *, rate: float = 1.0, offset_ms: float = 0.0) -> None:
    """Atomically set the skew a :class:`FileClock` on ``path`` will pick up."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rate": rate, "offset_ms": offset_ms}))
    os.replace(tmp, path)
