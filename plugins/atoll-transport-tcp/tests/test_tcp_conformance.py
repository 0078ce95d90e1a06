"""The transport conformance suite run against the TCP backend."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import anyio
import pytest

from atoll.core import Transport, TransportConfig, parse_address
from atoll.testing._transport_conformance import TransportConformance, TransportHarness
from atoll.transport.tcp import TcpTransport


def _config() -> TransportConfig:
    return TransportConfig(backend="tcp", max_frame_mb=16)


class TcpHarness(TransportHarness):
    """Starts TCP transports on loopback with free ports."""

    async def create(self, name: str) -> Transport:
        return TcpTransport(_config(), node_id=name, listen="127.0.0.1:0")

    async def recreate(self, old: Transport, name: str) -> Transport:
        return TcpTransport(_config(), node_id=name, listen=old.address)

    def dead_address(self) -> str:
        # Bind then close: nobody listens on that port for the rest of the test.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return f"127.0.0.1:{port}"

    async def inject_raw(self, target: Transport, data: bytes) -> None:
        host, port = parse_address(target.address)
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(data)
            with anyio.fail_after(10):
                while True:
                    try:
                        await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        return  # the server closed the connection, as it must


class TestTcpConformance(TransportConformance):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[TransportHarness]:
        h = TcpHarness()
        yield h
        await h.aclose()
