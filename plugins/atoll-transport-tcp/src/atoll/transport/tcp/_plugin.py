"""The pluggy hook implementations that make ``[transport] backend = "tcp"`` selectable.

Owns: naming the backend and building a :class:`TcpTransport` from config.
Never: starts the transport (the node does, when it is ready to handle frames).
"""

from __future__ import annotations

from atoll.core import TransportConfig, hookimpl

from ._transport import TcpTransport

__all__ = ["atoll_make_transport", "atoll_transport_backends"]

BACKEND = "tcp"


@hookimpl
def atoll_transport_backends() -> list[str]:
    """This plugin provides the ``tcp`` transport."""
    return [BACKEND]


@hookimpl
def atoll_make_transport(
    backend: str, config: TransportConfig, node_id: str, listen: str
) -> TcpTransport | None:
    """Create a TCP transport bound to ``listen`` (or client-only when it is empty)."""
    if backend != BACKEND:
        return None
    return TcpTransport(config, node_id=node_id, listen=listen)
