"""Backends are found from installed entry points alone and selected by config.

Runs against the installed workspace (every plugin distribution installed), the way an
operator's node finds its backends: no explicit plugin list.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from atoll.core import (
    AtollConfig,
    PluginError,
    Transport,
    make_plugin_manager,
    make_transport,
    open_storage,
    parse_config,
    storage_backends,
    transport_backends,
)

STORAGE = ["lmdb", "memory", "rocksdb"]
TRANSPORT = ["memory", "nats", "tcp"]


def test_entry_points_list_every_backend() -> None:
    pm = make_plugin_manager()
    assert storage_backends(pm) == STORAGE
    assert transport_backends(pm) == TRANSPORT


@pytest.mark.parametrize("backend", STORAGE)
def test_config_selects_storage_backend(backend: str, tmp_path: Path) -> None:
    cfg: AtollConfig = parse_config({"storage": {"backend": backend}}, environ={})
    engine = open_storage(make_plugin_manager(), cfg.storage, str(tmp_path))
    try:
        assert engine.backend == backend
        engine.create_namespace("t")
        engine.get("t", b"k")
    finally:
        engine.close()


@pytest.mark.parametrize("backend", TRANSPORT)
def test_config_selects_transport_backend(backend: str, nats_server: object) -> None:
    doc = {"transport": {"backend": backend}}
    if backend == "nats":
        doc["transport"]["servers"] = [nats_server.url]  # type: ignore[attr-defined]
    cfg = parse_config(doc, environ={})

    async def main() -> None:
        t: Transport = make_transport(make_plugin_manager(), cfg.transport, "n1", "127.0.0.1:0")
        assert t.backend == backend
        await t.close()

    anyio.run(main)


def test_uninstalled_backend_is_one_clear_line(tmp_path: Path) -> None:
    cfg = parse_config({"storage": {"backend": "leveldb"}}, environ={})
    with pytest.raises(PluginError) as exc:
        open_storage(make_plugin_manager(), cfg.storage, str(tmp_path))
    assert str(exc.value) == (
        "storage.backend = 'leveldb' is not an installed storage backend "
        "(installed: lmdb, memory, rocksdb; install atoll-storage-leveldb to add it)"
    )


def test_module_cli_lists_backends() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "atoll.core"], capture_output=True, text=True, check=True
    ).stdout
    assert "storage   lmdb, memory, rocksdb" in out
    assert "transport memory, nats, tcp" in out
