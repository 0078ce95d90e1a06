"""Shared fixtures for atoll-telemetry's tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the backend Atoll nodes run on)."""
    return "asyncio"
