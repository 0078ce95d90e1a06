"""Building a node's plugin manager and resolving the configured backends.

Owns: one :class:`pluggy.PluginManager` per node object (never a module global), entry
point discovery from the group ``atoll``, ``check_pending()``, and the clear errors for
unknown backends.
Never: imports a backend directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any, cast

import pluggy

from . import hookspecs
from ._config import StorageConfig, TransportConfig
from ._errors import PluginError
from ._storage import StorageEngine
from ._transport import Transport

__all__ = [
    "installed_plugins",
    "make_plugin_manager",
    "make_transport",
    "open_storage",
    "storage_backends",
    "transport_backends",
]


def installed_plugins() -> dict[str, str]:
    """Entry points in the ``atoll`` group: plugin name -> module path."""
    return {ep.name: ep.value for ep in entry_points(group=hookspecs.PROJECT)}


def make_plugin_manager(
    plugins: Iterable[object] = (), *, load_entry_points: bool = True
) -> pluggy.PluginManager:
    """Return a new plugin manager with Atoll's hookspecs.

    :param plugins: extra plugin objects or modules to register (tests pass explicit
        lists and set ``load_entry_points=False`` to avoid scanning what is installed).
    :param load_entry_points: also load every plugin installed under the ``atoll`` group.
    :raises PluginError: a plugin fails to import, or implements an unknown hook.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if load_entry_points:
        try:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        except Exception as exc:
            raise PluginError(f"an installed atoll plugin failed to load: {exc!r}") from exc
    for plugin in plugins:
        if not pm.is_registered(plugin):
            pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin validation failed: {exc}") from exc
    return pm


def _flatten(results: Iterable[Iterable[str]]) -> list[str]:
    return sorted({name for names in results for name in names})


def storage_backends(pm: pluggy.PluginManager) -> list[str]:
    """Every storage backend the registered plugins provide, sorted."""
    return _flatten(pm.hook.atoll_storage_backends())


def transport_backends(pm: pluggy.PluginManager) -> list[str]:
    """Every transport backend the registered plugins provide, sorted."""
    return _flatten(pm.hook.atoll_transport_backends())


def _require(kind: str, backend: str, available: list[str]) -> None:
    if backend not in available:
        listed = ", ".join(available) if available else "none"
        raise PluginError(
            f"{kind}.backend = {backend!r} is not an installed {kind} backend "
            f"(installed: {listed}; install atoll-{kind}-{backend} to add it)"
        )


def open_storage(pm: pluggy.PluginManager, config: StorageConfig, data_dir: str) -> StorageEngine:
    """Open the storage engine ``config.backend`` names, or raise one clear PluginError."""
    _require("storage", config.backend, storage_backends(pm))
    engine = pm.hook.atoll_open_storage(backend=config.backend, config=config, data_dir=data_dir)
    if engine is None:
        raise PluginError(f"storage backend {config.backend!r} is listed but opened nothing")
    return cast(StorageEngine, engine)


def make_transport(
    pm: pluggy.PluginManager, config: TransportConfig, node_id: str, listen: str
) -> Transport:
    """Create the transport ``config.backend`` names, or raise one clear PluginError."""
    _require("transport", config.backend, transport_backends(pm))
    transport: Any = pm.hook.atoll_make_transport(
        backend=config.backend, config=config, node_id=node_id, listen=listen
    )
    if transport is None:
        raise PluginError(f"transport backend {config.backend!r} is listed but made nothing")
    return cast(Transport, transport)
