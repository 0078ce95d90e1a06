"""Atoll's pytest plugin: fixtures every package's tests may use.

Owns: the ``nats_server`` fixture (a real nats-server per test module).
Never: skips a test because a tool is missing; a missing ``nats-server`` fails loudly.

Loaded through the ``pytest11`` entry point of atoll-testing (or, before that is
installed, ``pytest_plugins = ["atoll.testing.pytest_plugin"]`` in a conftest).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._nats import NatsServer, NatsServerError

__all__ = ["nats_server", "running_nats_server"]


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    """A running ``nats-server`` on a free loopback port, shared by one test module.

    A test may ``restart()`` it (same port); the fixture makes sure it is running again
    before the next test uses it.
    """
    try:
        server = NatsServer()
        server.start()
    except NatsServerError as exc:
        pytest.fail(f"nats_server fixture: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def running_nats_server(nats_server: NatsServer) -> NatsServer:
    """``nats_server``, restarted first if an earlier test left it stopped."""
    if not nats_server.running:
        nats_server.start()
    return nats_server
