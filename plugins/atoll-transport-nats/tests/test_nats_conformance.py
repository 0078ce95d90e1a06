"""The transport conformance suite run against the NATS backend and a real nats-server."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from atoll.core import Transport, TransportConfig
from atoll.testing._nats import NatsServer
from atoll.testing._transport_conformance import TransportConformance, TransportHarness
from atoll.transport.nats import NatsTransport
from atoll.transport.nats._envelope import encode_whole


class NatsHarness(TransportHarness):
    """Transports on one nats-server; a fresh subject prefix isolates each test."""

    def __init__(self, server: NatsServer) -> None:
        super().__init__()
        self.server = server
        self.prefix = f"t{secrets.token_hex(4)}"

    def config(self) -> TransportConfig:
        return TransportConfig(
            backend="nats",
            servers=[self.server.url],
            subject_prefix=self.prefix,
            max_frame_mb=16,
            options={"reconnect_wait": 0.05},
        )

    async def create(self, name: str) -> Transport:
        return NatsTransport(self.config(), node_id=name)

    async def recreate(self, old: Transport, name: str) -> Transport:
        t = NatsTransport(self.config(), node_id=name)
        assert t.address == old.address
        return t

    def dead_address(self) -> str:
        return f"{self.prefix}.nobody"

    async def inject_raw(self, target: Transport, data: bytes) -> None:
        nc = NatsClient()
        await nc.connect(servers=[self.server.url])
        try:
            await nc.publish(target.address, encode_whole(b"intruder", data))
            await nc.flush()
        finally:
            await nc.close()


class TestNatsConformance(TransportConformance):
    @pytest.fixture
    async def harness(self, running_nats_server: NatsServer) -> AsyncIterator[TransportHarness]:
        h = NatsHarness(running_nats_server)
        yield h
        await h.aclose()
