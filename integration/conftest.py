"""Shared helpers for tests that start real node processes on loopback."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from atoll.admin import DevCluster


def free_port_block(n: int, *, offset: int = 100) -> int:
    """A base port such that ``base .. base+n-1`` and ``base+offset ..`` are free now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + offset + n >= 65535:
            continue
        ok = True
        for p in [*range(base, base + n), *range(base + offset, base + offset + n)]:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free block of loopback ports")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., DevCluster]]:
    """Start a process cluster: ``make_cluster(n=3, storage="lmdb", transport="tcp")``."""
    made: list[DevCluster] = []

    def make(
        n: int = 3,
        *,
        storage: str = "lmdb",
        transport: str = "tcp",
        partitions: int = 4,
        nats_servers: list[str] | None = None,
        timeout: float = 60.0,
    ) -> DevCluster:
        c = DevCluster(tmp_path / f"cluster{len(made)}")
        descs = c.write_configs(
            n,
            base_port=free_port_block(n),
            storage=storage,
            transport=transport,
            partitions=partitions,
            rf=min(3, n),
            sync=True,
            nats_servers=nats_servers,
            telemetry_offset=None,
        )
        made.append(c)
        c.start(descs)
        c.wait_ready(timeout)
        return c

    yield make
    for c in made:
        c.stop()


async def wait_until(cond: Callable[[], Any], timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll ``cond`` until truthy (returned) or fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not (v := cond()):
            await anyio.sleep(every)
        return v
