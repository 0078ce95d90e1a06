"""TelemetryServer over real sockets on port 0: routes, health, garbage, limits, shutdown."""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atoll.telemetry import (
    CONTENT_TYPE,
    CheckOutcome,
    HealthRegistry,
    PrometheusMetrics,
    ServerLimits,
    TelemetryServer,
)

pytestmark = pytest.mark.anyio

DEADLINE = 10.0


@asynccontextmanager
async def running(server: TelemetryServer) -> AsyncIterator[TelemetryServer]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve)
        assert port == server.port
        yield server
        server.stop()


def fetch_sync(
    port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


async def fetch(
    server: TelemetryServer, path: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """A request from a real HTTP client (http.client), run in a worker thread."""
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    return await anyio.to_thread.run_sync(fetch_sync, server.port, path, method, hdrs)


async def read_response(stream: anyio.abc.ByteStream, buffer: bytearray) -> tuple[int, bytes]:
    """One response from a raw stream: (status, body), using its Content-Length."""
    with anyio.fail_after(DEADLINE):
        while b"\r\n\r\n" not in buffer:
            buffer.extend(await stream.receive())
        end = buffer.index(b"\r\n\r\n")
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[: end + 4]
        status = int(head.split(" ", 2)[1])
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        while len(buffer) < length:
            buffer.extend(await stream.receive())
        body = bytes(buffer[:length])
        del buffer[:length]
        return status, body


async def raw_exchange(server: TelemetryServer, data: bytes) -> tuple[int, bytes]:
    """Send raw bytes on a fresh connection; return the single response."""
    async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
        await stream.send(data)
        return await read_response(stream, bytearray())


async def read_until_closed(stream: anyio.abc.ByteStream) -> bytes:
    data = bytearray()
    with anyio.fail_after(DEADLINE):
        while True:
            try:
                data.extend(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return bytes(data)


async def wait_until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(DEADLINE):
        while not predicate():
            await anyio.sleep(0.005)


def make_server(**kwargs: object) -> TelemetryServer:
    return TelemetryServer(PrometheusMetrics(), **kwargs)  # type: ignore[arg-type]


def sample_value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"no sample {name}{labels} in the exposition")


async def test_metrics_are_served_in_the_prometheus_text_format() -> None:
    metrics = PrometheusMetrics()
    metrics.counter("atoll_raft_proposals_committed_total", "Committed.", ("group",)).labels(
        group="3"
    ).inc(4)
    async with running(TelemetryServer(metrics)) as server:
        status, headers, body = await fetch(server, "/metrics")
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE
    text = body.decode()
    assert sample_value(text, "atoll_raft_proposals_committed_total", group="3") == 4
    assert sample_value(text, "atoll_process_resident_memory_bytes") > 0


async def test_metrics_are_gzipped_when_the_scraper_asks() -> None:
    async with running(make_server()) as server:
        status, headers, body = await fetch(server, "/metrics", Accept_Encoding="gzip")
        _, plain_headers, _ = await fetch(server, "/metrics", Accept_Encoding="gzip;q=0")
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert b"atoll_process_open_fds" in gzip.decompress(body)
    assert "content-encoding" not in plain_headers


async def test_the_server_counts_its_own_requests() -> None:
    async with running(make_server()) as server:
        await fetch(server, "/livez")
        await fetch(server, "/nope")
        _, _, body = await fetch(server, "/metrics")
    text = body.decode()
    assert sample_value(text, "atoll_telemetry_http_requests_total", handler="livez", code="200")
    assert sample_value(text, "atoll_telemetry_http_requests_total", handler="other", code="404")


async def test_livez_and_readyz_plain_verbose_exclude_and_sub_paths() -> None:
    health = HealthRegistry()
    health.add_liveness_check("event-loop", lambda: None)
    reason: list[CheckOutcome] = ["not joined"]
    health.add_readiness_check("joined", lambda: reason[0])
    async with running(make_server(health=health)) as server:
        status, _, body = await fetch(server, "/livez")
        assert (status, body) == (200, b"ok\n")

        status, headers, body = await fetch(server, "/readyz")
        assert status == 503
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert b"[-]joined failed: reason withheld\n" in body
        assert body.endswith(b"readyz check failed\n")

        status, _, body = await fetch(server, "/readyz?verbose")
        assert status == 503
        assert body == (
            b"[+]ping ok\n[+]event-loop ok\n[-]joined failed: not joined\nreadyz check failed\n"
        )

        status, _, body = await fetch(server, "/readyz?exclude=joined")
        assert (status, body) == (200, b"ok\n")
        status, _, body = await fetch(server, "/readyz?verbose=1&exclude=joined&exclude=ghost")
        assert status == 200
        assert b'no matches for "ghost"' in body

        status, _, body = await fetch(server, "/readyz/joined")
        assert (status, body) == (503, b"[-]joined failed: not joined\n")
        status, _, body = await fetch(server, "/livez/event-loop")
        assert (status, body) == (200, b"ok\n")
        status, _, _ = await fetch(server, "/livez/joined")  # readiness-only
        assert status == 404
        status, _, _ = await fetch(server, "/readyz/joined/extra")
        assert status == 404

        reason[0] = None
        status, _, body = await fetch(server, "/readyz/")
        assert (status, body) == (200, b"ok\n")


async def test_a_hanging_check_times_out_instead_of_hanging_the_probe() -> None:
    never = anyio.Event()

    async def stuck() -> CheckOutcome:
        await never.wait()
        return None

    health = HealthRegistry()
    health.add_readiness_check("storage", stuck, timeout=0.05)
    async with running(make_server(health=health)) as server:
        status, _, body = await fetch(server, "/readyz?verbose")
    assert status == 503
    assert b"[-]storage failed: timed out after 0.05s\n" in body


async def test_head_requests_get_headers_only() -> None:
    async with (
        running(make_server()) as server,
        await anyio.connect_tcp("127.0.0.1", server.port) as stream,
    ):
        await stream.send(b"HEAD /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = await read_until_closed(stream)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length: 3" in head
    assert body == b""


async def test_unknown_paths_and_methods() -> None:
    async with running(make_server()) as server:
        status, _, body = await fetch(server, "/admin")
        assert status == 404 and b"no such path" in body
        status, headers, _ = await fetch(server, "/metrics", method="POST")
        assert status == 405
        assert headers["allow"] == "GET, HEAD"
        assert headers["connection"] == "close"


async def test_debug_vars_is_json_with_registered_info() -> None:
    server = make_server(debug_vars=lambda: {"node_id": "n1", "epoch": 7})
    async with running(server):
        status, headers, body = await fetch(server, "/debug/vars")
        index_status, _, index = await fetch(server, "/")
    assert status == 200
    assert headers["content-type"] == "application/json"
    info = json.loads(body)
    assert info["node_id"] == "n1"
    assert info["epoch"] == 7
    assert info["health_checks"] == {"livez": ["ping"], "readyz": ["ping"]}
    assert "atoll_telemetry_http_requests_total" in info["metrics"]
    assert index_status == 200 and b"/readyz/<check>" in index


async def test_a_failing_handler_is_a_500_and_the_server_keeps_serving() -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("debug vars exploded")

    async with running(make_server(debug_vars=broken)) as server:
        status, _, body = await fetch(server, "/debug/vars")
        assert status == 500
        assert b"exploded" not in body
        status, _, _ = await fetch(server, "/livez")
        assert status == 200


@pytest.mark.parametrize(
    ("garbage", "status"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello
        (b"\x00\xff\xfe garbage\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),  # HTTP/0.9
        (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /metrics HTTP/3.0\r\nHost: t\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 20000, 431),  # no end in sight
    ],
)
async def test_garbage_gets_a_4xx_and_the_server_keeps_serving(garbage: bytes, status: int) -> None:
    async with running(make_server()) as server:
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            await stream.send(garbage)
            data = await read_until_closed(stream)
        assert data.startswith(f"HTTP/1.1 {status} ".encode())
        assert b"Connection: close" in data
        assert (await fetch(server, "/livez"))[0] == 200


async def test_a_client_that_hangs_up_mid_request_does_not_disturb_the_server() -> None:
    async with running(make_server()) as server:
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            await stream.send(b"GET /metr")
            await stream.send_eof()
            assert await read_until_closed(stream) == b""
        assert (await fetch(server, "/livez"))[0] == 200


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with (
        running(make_server()) as server,
        await anyio.connect_tcp("127.0.0.1", server.port) as stream,
    ):
        buffer = bytearray()
        # Two pipelined requests in one write, then a third after the answers.
        await stream.send(
            b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\nGET /readyz HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        assert await read_response(stream, buffer) == (200, b"ok\n")
        assert await read_response(stream, buffer) == (200, b"ok\n")
        await stream.send(b"GET /livez/ping HTTP/1.1\r\nHost: t\r\n\r\n")
        assert await read_response(stream, buffer) == (200, b"ok\n")
        assert server.active_connections == 1


async def test_a_slow_client_gets_408_once_the_head_timeout_passes() -> None:
    server = make_server(limits=ServerLimits(head_timeout=0.05))
    async with running(server):
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            await stream.send(b"GET /livez HTTP/1.1\r\nHo")
            data = await read_until_closed(stream)
        assert data.startswith(b"HTTP/1.1 408 ")
        # Raw and in one write: a threaded client could itself be slower than 50 ms.
        assert await raw_exchange(server, b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n") == (
            200,
            b"ok\n",
        )


async def test_connections_beyond_the_limit_are_refused_with_503() -> None:
    server = make_server(limits=ServerLimits(max_connections=1))
    async with running(server):
        async with await anyio.connect_tcp("127.0.0.1", server.port) as first:
            await wait_until(lambda: server.active_connections == 1)
            async with await anyio.connect_tcp("127.0.0.1", server.port) as second:
                data = await read_until_closed(second)
            assert data.startswith(b"HTTP/1.1 503 ")
            await first.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
            assert await read_response(first, bytearray()) == (200, b"ok\n")
        await wait_until(lambda: server.active_connections == 0)
        assert (await fetch(server, "/livez"))[0] == 200


async def test_stop_closes_the_listener_and_open_connections() -> None:
    server = make_server()
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve)
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            await stream.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
            assert await read_response(stream, bytearray()) == (200, b"ok\n")
            server.stop()
            assert await read_until_closed(stream) == b""
    with pytest.raises(RuntimeError, match="not listening"):
        _ = server.port
    with pytest.raises(OSError):
        await anyio.connect_tcp("127.0.0.1", port)


async def test_port_zero_binds_a_free_port_and_two_servers_coexist() -> None:
    first, second = make_server(), make_server()
    async with running(first), running(second):
        assert first.port != second.port
        assert first.url == f"http://127.0.0.1:{first.port}"
        assert (await fetch(first, "/livez"))[0] == 200
        assert (await fetch(second, "/livez"))[0] == 200


async def test_binding_a_port_in_use_fails_loudly() -> None:
    async with running(make_server()) as server:
        clash = make_server(port=server.port)
        with pytest.raises(OSError):
            await clash.serve()


def test_invalid_port_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        make_server(port=70000)
