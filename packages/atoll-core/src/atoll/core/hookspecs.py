"""Atoll's pluggy hook specifications: the only way subsystems and plugins meet.

Each hook is a typed do-nothing function whose docstring is its reference documentation
(docs/hooks.md is checked against this module by a test). Two kinds:

* **providers** (``firstresult=True``): the plugin named in config answers, the others
  return None. They return objects implementing a protocol from :mod:`atoll.core`; the
  caller keeps that object, so hot-path IO never goes through a hook call.
* **events**: notifications. They are synchronous and must not block: an async
  subsystem enqueues the event and handles it in its own task.

Plugins implement hooks with :data:`hookimpl` and register under the entry-point group
``atoll``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._config import AtollConfig, StorageConfig, TransportConfig
    from ._contracts import ClusterMapChange, LeaderChange, MembershipEvent, PartitionMove
    from ._registries import AdminCommandRegistry, MetricsRegistry
    from ._storage import StorageEngine
    from ._transport import Transport

PROJECT = "atoll"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec"]


# --------------------------------------------------------------------------- providers


@hookspec
def atoll_storage_backends() -> list[str]:
    """Name the storage backends this plugin provides.

    Called when a node validates ``[storage] backend`` and when an operator lists what is
    installed. Every implementation's list is collected (not firstresult).

    :return: backend names, e.g. ``["lmdb"]``.
    """
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec(firstresult=True)
def atoll_open_storage(backend: str, config: StorageConfig, data_dir: str) -> StorageEngine | None:
    """Open the storage engine named ``backend``, or return None if it is not yours.

    Stops at the first non-None result.

    :param backend: the configured ``[storage] backend``.
    :param config: the whole ``[storage]`` section (``sync``, ``options`` ...).
    :param data_dir: the node's data directory; the engine keeps its files below it.
    :return: an object implementing :class:`atoll.core.StorageEngine`.
    :raises atoll.core.StorageError: the files exist but cannot be opened (corrupt,
        locked, disk full); the message names the path.
    """
    raise NotImplementedError  # pragma: no cover


@hookspec
def atoll_transport_backends() -> list[str]:
    """Name the transport backends this plugin provides. Collected from every plugin.

    :return: backend names, e.g. ``["tcp"]``.
    """
    raise NotImplementedError  # pragma: no cover


@hookspec(firstresult=True)
def atoll_make_transport(
    backend: str, config: TransportConfig, node_id: str, listen: str
) -> Transport | None:
    """Create (not start) the transport named ``backend``, or return None if not yours.

    Stops at the first non-None result.

    :param backend: the configured ``[transport] backend``.
    :param config: the whole ``[transport]`` section.
    :param node_id: this node's id (NATS derives its subject from it).
    :param listen: the ``host:port`` to bind (stream transports) or an empty string for
        a client-only transport.
    :return: an object implementing :class:`atoll.core.Transport`.
    """
    raise NotImplementedError  # pragma: no cover


# --------------------------------------------------------------------------- lifecycle


@hookspec
def atoll_configure(config: AtollConfig) -> None:
    """The node's validated configuration, given to every plugin before anything starts.

    A plugin that finds its own settings wrong raises :class:`atoll.core.ConfigError`.
    """


# --------------------------------------------------------------------------- events


@hookspec
def atoll_membership_changed(event: MembershipEvent) -> None:
    """A member joined, changed state (alive/suspect/dead), updated metadata or left.

    Fired by membership on the node that learned it. Must not block.
    """


@hookspec
def atoll_node_suspected(node_id: str, incarnation: int) -> None:
    """The failure detector suspects ``node_id`` (it may still refute). Must not block."""


@hookspec
def atoll_node_dead(node_id: str, incarnation: int) -> None:
    """The failure detector declared ``node_id`` dead. Must not block."""


@hookspec
def atoll_leader_changed(change: LeaderChange) -> None:
    """A Raft group hosted on this node saw a new leader (or lost it). Must not block."""


@hookspec
def atoll_cluster_map_changed(change: ClusterMapChange) -> None:
    """This node applied a new cluster-map epoch. Must not block."""


@hookspec
def atoll_partition_moved(move: PartitionMove) -> None:
    """A replica move changed state (planned, copying, ..., done, failed). Must not block."""


# --------------------------------------------------------------------------- registries


@hookspec
def atoll_register_metrics(registry: MetricsRegistry) -> None:
    """Create this plugin's metrics in ``registry`` (called once per node at start-up).

    Names follow ``atoll_<subsystem>_<name>_<unit>`` with ``_total`` on counters.
    """


@hookspec
def atoll_admin_commands(registry: AdminCommandRegistry) -> None:
    """Add this plugin's admin operations to ``registry`` (called once per node).

    The admin API, the ``atoll`` CLI and the TUI list and call commands by name.
    """
