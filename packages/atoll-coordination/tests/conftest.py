"""Fixtures: a fresh storage engine per test (memory and lmdb)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.core import StorageConfig, StorageEngine, make_plugin_manager, open_storage


@pytest.fixture(params=["memory", "lmdb"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageEngine]:
    """An open engine of each backend the state machine must work on."""
    backend = request.param
    module = __import__(f"atoll.storage.{backend}._plugin", fromlist=["_plugin"])
    pm = make_plugin_manager([module], load_entry_points=False)
    eng = open_storage(pm, StorageConfig(backend=backend, sync=False), str(tmp_path))
    yield eng
    eng.close()
