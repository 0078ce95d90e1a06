"""The transport conformance suite run against the memory backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from atoll.core import Transport, TransportConfig
from atoll.testing._transport_conformance import TransportConformance, TransportHarness
from atoll.transport.memory import MemoryNetwork, MemoryTransport


def _config() -> TransportConfig:
    return TransportConfig(backend="memory", max_frame_mb=16)


class MemoryHarness(TransportHarness):
    """Every transport of a test on one fresh network."""

    def __init__(self) -> None:
        super().__init__()
        self.network = MemoryNetwork()

    async def create(self, name: str) -> Transport:
        return MemoryTransport(self.network, name, _config())

    async def recreate(self, old: Transport, name: str) -> Transport:
        return MemoryTransport(self.network, old.address, _config())

    def dead_address(self) -> str:
        return "nobody-lives-here"

    async def inject_raw(self, target: Transport, data: bytes) -> None:
        assert await self.network.inject("intruder", target.address, data)


class TestMemoryConformance(TransportConformance):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[TransportHarness]:
        h = MemoryHarness()
        yield h
        await h.aclose()
