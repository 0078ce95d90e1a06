"""Plugin manager: one per node, explicit plugin lists, loud failures."""

from __future__ import annotations

from typing import Any

import pytest

from atoll.core import (
    PluginError,
    StorageConfig,
    TransportConfig,
    hookimpl,
    make_plugin_manager,
    make_transport,
    open_storage,
    storage_backends,
    transport_backends,
)


class FakeEnginePlugin:
    """A plugin that provides a storage backend named "fake" (returns a sentinel)."""

    sentinel = object()

    @hookimpl
    def atoll_storage_backends(self) -> list[str]:
        return ["fake"]

    @hookimpl
    def atoll_open_storage(self, backend: str, config: StorageConfig, data_dir: str) -> Any:
        return self.sentinel if backend == "fake" else None


class Misspelled:
    @hookimpl
    def atoll_open_storag(self) -> None:  # no such hookspec
        pass


def test_managers_are_independent() -> None:
    p = FakeEnginePlugin()
    pm1 = make_plugin_manager([p], load_entry_points=False)
    pm2 = make_plugin_manager([], load_entry_points=False)
    assert storage_backends(pm1) == ["fake"]
    assert storage_backends(pm2) == []


def test_configured_backend_is_selected() -> None:
    p = FakeEnginePlugin()
    pm = make_plugin_manager([p], load_entry_points=False)
    assert open_storage(pm, StorageConfig(backend="fake"), "/tmp/x") is p.sentinel


def test_unknown_backend_is_one_clear_line() -> None:
    pm = make_plugin_manager([FakeEnginePlugin()], load_entry_points=False)
    with pytest.raises(PluginError) as exc:
        open_storage(pm, StorageConfig(backend="leveldb"), "/tmp/x")
    msg = str(exc.value)
    assert msg.startswith("storage.backend = 'leveldb' is not an installed storage backend")
    assert "installed: fake" in msg
    assert "\n" not in msg
    with pytest.raises(PluginError, match="installed: none"):
        make_transport(pm, TransportConfig(backend="tcp"), "n1", "127.0.0.1:0")
    assert transport_backends(pm) == []


def test_hook_without_spec_fails_loudly() -> None:
    with pytest.raises(PluginError, match="atoll_open_storag"):
        make_plugin_manager([Misspelled()], load_entry_points=False)
