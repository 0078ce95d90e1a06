"""How the CLI reaches a cluster: endpoints and a client-only transport.

Owns: finding endpoints (``--endpoints``, ``ATOLL_ENDPOINTS``, the dev cluster's state
file, else ``127.0.0.1:7401``) and making a client transport from the installed plugins.
Never: routes requests (the client library does).
"""

from __future__ import annotations

import os
from pathlib import Path

from atoll.core import Frame, Transport, TransportConfig, make_plugin_manager, make_transport

__all__ = ["DEFAULT_DEV_DIR", "client_transport", "resolve_endpoints"]

DEFAULT_DEV_DIR = Path(".atoll/dev")


def resolve_endpoints(endpoints: str | None, dev_dir: Path = DEFAULT_DEV_DIR) -> list[str]:
    """The endpoints to use, most explicit source first."""
    if endpoints:
        return [e.strip() for e in endpoints.split(",") if e.strip()]
    env = os.environ.get("ATOLL_ENDPOINTS")
    if env:
        return [e.strip() for e in env.split(",") if e.strip()]
    from ._dev import DevCluster

    found = DevCluster(dev_dir).endpoints()
    return found or ["127.0.0.1:7401"]


async def client_transport(backend: str = "tcp", servers: list[str] | None = None) -> Transport:
    """A started client-only transport (``servers``: NATS URLs)."""
    cfg = TransportConfig(backend=backend)
    if servers:
        cfg.servers = list(servers)
    t = make_transport(make_plugin_manager(), cfg, "cli", "")

    async def ignore(frame: Frame, sender: str) -> None:
        return None

    await t.start(ignore)
    return t
