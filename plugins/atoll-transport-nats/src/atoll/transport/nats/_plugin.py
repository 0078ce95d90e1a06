"""The pluggy hook implementations that make ``[transport] backend = "nats"`` selectable.

Owns: naming the backend and building a :class:`NatsTransport` from config.
Never: connects (``start`` does, when the node is ready to handle frames).
"""

from __future__ import annotations

from atoll.core import TransportConfig, hookimpl

from ._transport import NatsTransport

__all__ = ["atoll_make_transport", "atoll_transport_backends"]

BACKEND = "nats"


@hookimpl
def atoll_transport_backends() -> list[str]:
    """This plugin provides the ``nats`` transport."""
    return [BACKEND]


@hookimpl
def atoll_make_transport(
    backend: str, config: TransportConfig, node_id: str, listen: str
) -> NatsTransport | None:
    """Create a NATS transport on subject ``<subject_prefix>.<node_id>``.

    An empty ``listen`` marks a client-only transport: its subject gets a random suffix.
    """
    if backend != BACKEND:
        return None
    return NatsTransport(config, node_id=node_id, client_only=not listen)
