"""Make ``atoll_chaos`` importable when the chaos tests run from the repository root."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parents[1]
if str(CHAOS) not in sys.path:
    sys.path.insert(0, str(CHAOS))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
