"""The pluggy hook implementations that make ``[transport] backend = "memory"`` selectable.

Owns: naming the backend and building a :class:`MemoryTransport` from config.
Never: starts the transport.

The network comes from ``config.options["network"]`` (a :class:`MemoryNetwork`, for
tests and simulations that build many nodes) or else the process-wide default network.
The address is ``config.options["address"]``, else ``listen``, else the node id.
"""

from __future__ import annotations

from atoll.core import ConfigError, TransportConfig, hookimpl
from atoll.testing import MemoryNetwork, default_memory_network

from ._transport import MemoryTransport

__all__ = ["atoll_make_transport", "atoll_transport_backends"]

BACKEND = "memory"


@hookimpl
def atoll_transport_backends() -> list[str]:
    """This plugin provides the ``memory`` transport."""
    return [BACKEND]


@hookimpl
def atoll_make_transport(
    backend: str, config: TransportConfig, node_id: str, listen: str
) -> MemoryTransport | None:
    """Create a memory transport on the configured (or the default) network."""
    if backend != BACKEND:
        return None
    network = config.options.get("network")
    if network is None:
        network = default_memory_network()
    elif not isinstance(network, MemoryNetwork):
        raise ConfigError(
            f"transport.options.network = {network!r} is not valid: "
            "expected an atoll.testing.MemoryNetwork"
        )
    address = str(config.options.get("address") or listen or node_id)
    return MemoryTransport(network, address, config)
