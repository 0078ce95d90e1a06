"""The node's telemetry HTTP endpoint: ``/metrics``, ``/livez``, ``/readyz``, ``/debug/vars``.

Owns: :class:`TelemetryServer` (listening on anyio TCP, one task per connection,
keep-alive, bounded heads, timeouts and connection count), the routes, and the mapping
of a health report to a status and a body.
Never: lets one connection's failure or garbage input reach the listener (a bad request
gets a 4xx and the server keeps serving), accepts a request body, or uses the global
prometheus-client registry.
"""

from __future__ import annotations

import gzip
import http
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping
from typing import Final

import anyio
import anyio.abc
import attrs
from anyio.abc import SocketAttribute

from ._health import HealthRegistry, Probe
from ._http import (
    ALLOWED_METHODS,
    HttpError,
    Request,
    Response,
    encode_response,
    find_head_end,
    parse_request_head,
)
from ._metrics import CONTENT_TYPE, PrometheusMetrics

__all__ = ["ServerLimits", "TelemetryServer"]

log = logging.getLogger("atoll.telemetry.server")

_READ_CHUNK: Final = 65536
# A lingering close: after the last response, shut our side and read what the client
# still sends for a moment, so closing with unread input does not turn into a TCP reset
# that destroys the response (an error answered mid-upload) before the client reads it.
_LINGER_SECONDS: Final = 0.5
_LINGER_MAX_BYTES: Final = 256 * 1024
_GZIP_MIN_BYTES: Final = 1024
# Values of the ``handler`` label: fixed, so a scanner probing random paths cannot
# inflate the series count.
_HANDLERS: Final = frozenset({"index", "metrics", "livez", "readyz", "debug_vars", "invalid"})
_INDEX: Final = (
    "Atoll node telemetry\n\n"
    "/metrics         Prometheus text exposition\n"
    "/livez           liveness probe (?verbose, ?exclude=<check>)\n"
    "/livez/<check>   one liveness check\n"
    "/readyz          readiness probe (?verbose, ?exclude=<check>)\n"
    "/readyz/<check>  one readiness check\n"
    "/debug/vars      process and node information as JSON\n"
)

DebugVars = Callable[[], Mapping[str, object]]


@attrs.frozen
class ServerLimits:
    """Bounds that keep a misbehaving or hostile client from costing the node much."""

    max_head_bytes: int = 16384
    """Largest request head accepted; a longer one is answered 431 and closed."""
    max_connections: int = 64
    """Connections served at once; the next one is answered 503 and closed."""
    head_timeout: float = 10.0
    """Seconds a client has to send a complete head once a connection is open."""
    idle_timeout: float = 60.0
    """Seconds a kept-alive connection may wait for its next request."""
    write_timeout: float = 10.0
    """Seconds a response may take to write before the connection is dropped."""
    max_requests_per_connection: int = 1000
    """Requests served on one connection before it is closed (spreads long-lived load)."""


class TelemetryServer:
    """Serves a node's metrics and health over HTTP/1.1 (GET and HEAD only).

    Start it with ``await task_group.start(server.serve)``: when that returns the socket
    is listening and :attr:`port` holds the bound port (useful with ``port=0``). Stop it
    by cancelling the task group or calling :meth:`stop`; open connections are closed.

    :param metrics: exported at ``/metrics``; the server also counts its own requests in
        it as ``atoll_telemetry_http_requests_total{handler,code}``.
    :param health: evaluated at ``/livez`` and ``/readyz`` (a registry with only the
        built-in ``ping`` check when omitted).
    :param host: address to bind; ``127.0.0.1`` by default. The endpoint has no
        authentication, so bind it to a private interface.
    :param port: port to bind; 0 picks a free one.
    :param debug_vars: returns extra JSON-serialisable entries for ``/debug/vars``
        (node id, cluster map epoch ...); called on each request, on the event loop.
    """

    def __init__(
        self,
        metrics: PrometheusMetrics,
        health: HealthRegistry | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        debug_vars: DebugVars | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"telemetry port must be 0..65535, got {port!r}")
        self._metrics = metrics
        self._health = health if health is not None else HealthRegistry()
        self._host = host
        self._requested_port = port
        self._debug_vars = debug_vars
        self._limits = limits if limits is not None else ServerLimits()
        self._port: int | None = None
        self._active = 0
        self._started_at = time.time()
        self._scope: anyio.CancelScope | None = None
        self._requests = metrics.counter(
            "atoll_telemetry_http_requests_total",
            "HTTP requests answered by the telemetry endpoint, by handler and status code.",
            ("handler", "code"),
        )

    @property
    def health(self) -> HealthRegistry:
        """The health registry this server evaluates."""
        return self._health

    @property
    def port(self) -> int:
        """The bound TCP port.

        :raises RuntimeError: the server is not listening yet.
        """
        if self._port is None:
            raise RuntimeError("the telemetry server is not listening; start serve() first")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening server."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def active_connections(self) -> int:
        """Connections being served right now."""
        return self._active

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled or :meth:`stop` is called.

        Reports the bound port through ``task_status.started`` once listening.

        :raises OSError: the address cannot be bound (in use, not local).
        :raises RuntimeError: this server is already serving.
        """
        if self._scope is not None:
            raise RuntimeError("this telemetry server is already serving")
        listener = await anyio.create_tcp_listener(
            local_host=self._host, local_port=self._requested_port
        )
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                async with listener, anyio.create_task_group() as tg:
                    self._port = listener.extra(SocketAttribute.local_port)
                    log.info("telemetry endpoint listening on %s", self.url)
                    task_status.started(self._port)
                    await listener.serve(self._handle_connection, task_group=tg)
        finally:
            self._scope = None
            self._port = None

    def stop(self) -> None:
        """Stop serving: :meth:`serve` closes the listener and every connection, then returns."""
        if self._scope is not None:
            self._scope.cancel()

    # ------------------------------------------------------------------ connections

    async def _handle_connection(self, stream: anyio.abc.SocketStream) -> None:
        try:
            async with stream:
                if self._active >= self._limits.max_connections:
                    await self._send(
                        stream,
                        _error(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many connections"),
                        keep_alive=False,
                    )
                else:
                    self._active += 1
                    try:
                        await self._converse(stream)
                    finally:
                        self._active -= 1
                await _linger(stream)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            pass  # the client went away; nothing to answer
        except OSError as exc:
            log.debug("telemetry connection failed: %s", exc)
        except Exception:
            # Never let a connection's bug reach the listener's task group.
            log.exception("telemetry connection handler failed")

    async def _converse(self, stream: anyio.abc.SocketStream) -> None:
        buffer = bytearray()
        served = 0
        while True:
            waiting_idle = served > 0 and not buffer
            timeout = self._limits.idle_timeout if waiting_idle else self._limits.head_timeout
            try:
                with anyio.fail_after(timeout):
                    head = await self._read_head(stream, buffer)
            except TimeoutError:
                if buffer:
                    await self._send(
                        stream,
                        _error(http.HTTPStatus.REQUEST_TIMEOUT, "request head not received"),
                        keep_alive=False,
                    )
                return
            except HttpError as exc:
                self._count("invalid", exc.status)
                await self._send(stream, _error(exc.status, exc.detail), keep_alive=False)
                return
            if head is None:
                return
            try:
                request = parse_request_head(head)
            except HttpError as exc:
                self._count("invalid", exc.status)
                extra = (("Allow", ", ".join(ALLOWED_METHODS)),)
                allow = extra if exc.status == http.HTTPStatus.METHOD_NOT_ALLOWED else ()
                await self._send(stream, _error(exc.status, exc.detail, allow), keep_alive=False)
                return
            served += 1
            response = await self._respond(request)
            keep_alive = (
                request.keep_alive
                and not request.has_body
                and served < self._limits.max_requests_per_connection
                and response.status != http.HTTPStatus.INTERNAL_SERVER_ERROR
            )
            await self._send(
                stream, response, keep_alive=keep_alive, head_only=request.method == "HEAD"
            )
            if not keep_alive:
                return

    async def _read_head(self, stream: anyio.abc.SocketStream, buffer: bytearray) -> bytes | None:
        """The next request head from ``buffer`` and ``stream``; None at a clean EOF."""
        while True:
            found = find_head_end(buffer)
            if found is not None:
                head_end, body_start = found
                if head_end > self._limits.max_head_bytes:
                    break
                head = bytes(buffer[:head_end])
                del buffer[:body_start]
                return head
            if len(buffer) > self._limits.max_head_bytes:
                break
            try:
                chunk = await stream.receive(_READ_CHUNK)
            except anyio.EndOfStream:
                return None  # closed between requests, or mid-head: nobody to answer
            buffer.extend(chunk)
        raise HttpError(
            http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"request head exceeds {self._limits.max_head_bytes} bytes",
        )

    async def _send(
        self,
        stream: anyio.abc.SocketStream,
        response: Response,
        *,
        keep_alive: bool,
        head_only: bool = False,
    ) -> None:
        data = encode_response(response, keep_alive=keep_alive, head_only=head_only)
        with anyio.fail_after(self._limits.write_timeout):
            await stream.send(data)

    # ------------------------------------------------------------------ routes

    async def _respond(self, request: Request) -> Response:
        handler = "other"
        try:
            handler, response = await self._route(request)
        except Exception:
            log.exception("telemetry handler for %s failed", request.path)
            response = _error(http.HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        self._count(handler, response.status)
        return response

    async def _route(self, request: Request) -> tuple[str, Response]:
        path = request.path.rstrip("/") or "/"
        if path == "/":
            return "index", _text(http.HTTPStatus.OK, _INDEX)
        if path == "/metrics":
            return "metrics", self._metrics_response(request)
        if path == "/debug/vars":
            return "debug_vars", self._debug_vars_response()
        first, _, rest = path[1:].partition("/")
        if first in (Probe.LIVEZ, Probe.READYZ):
            return first, await self._health_response(request, Probe(first), rest)
        return "other", _error(http.HTTPStatus.NOT_FOUND, f"no such path: {request.path}")

    def _metrics_response(self, request: Request) -> Response:
        body = self._metrics.exposition()
        if len(body) >= _GZIP_MIN_BYTES and _accepts_gzip(request.header("accept-encoding")):
            return Response(
                http.HTTPStatus.OK,
                gzip.compress(body, compresslevel=6),
                CONTENT_TYPE,
                (("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")),
            )
        return Response(http.HTTPStatus.OK, body, CONTENT_TYPE, (("Vary", "Accept-Encoding"),))

    async def _health_response(self, request: Request, probe: Probe, check: str) -> Response:
        verbose = "verbose" in request.query
        if check:
            if "/" in check:
                return _error(http.HTTPStatus.NOT_FOUND, f"no such path: {request.path}")
            report = await self._health.evaluate_one(probe, check)
            if report is None:
                return _error(http.HTTPStatus.NOT_FOUND, f"no {probe} check named {check!r}")
            result = report.results[0]
            body = "ok\n" if result.ok else result.line() + "\n"
        else:
            exclude = [
                name.strip()
                for value in request.query.get("exclude", [])
                for name in value.split(",")
                if name.strip()
            ]
            report = await self._health.evaluate(probe, exclude=exclude)
            body = report.render(verbose=verbose)
            for failed in report.failed:
                log.warning("%s check %s failed: %s", probe, failed.name, failed.reason)
        status = http.HTTPStatus.OK if report.ok else http.HTTPStatus.SERVICE_UNAVAILABLE
        return _text(status, body)

    def _debug_vars_response(self) -> Response:
        from . import __version__

        info: dict[str, object] = {
            "pid": os.getpid(),
            "python": platform.python_version(),
            "atoll_telemetry": __version__,
            "server_started_unix": self._started_at,
            "uptime_seconds": round(time.time() - self._started_at, 3),
            "health_checks": {p.value: self._health.names(p) for p in Probe},
            "metrics": self._metrics.names(),
        }
        if self._debug_vars is not None:
            info.update(self._debug_vars())
        body = json.dumps(info, indent=2, sort_keys=True, default=str) + "\n"
        return Response(http.HTTPStatus.OK, body.encode(), "application/json")

    def _count(self, handler: str, status: http.HTTPStatus) -> None:
        label = handler if handler in _HANDLERS else "other"
        self._requests.labels(handler=label, code=str(status.value)).inc()


async def _linger(stream: anyio.abc.SocketStream) -> None:
    with anyio.move_on_after(_LINGER_SECONDS):
        await stream.send_eof()
        drained = 0
        while drained < _LINGER_MAX_BYTES:
            try:
                drained += len(await stream.receive(_READ_CHUNK))
            except anyio.EndOfStream:
                return


def _text(status: http.HTTPStatus, body: str) -> Response:
    return Response(status, body.encode("utf-8"))


def _error(
    status: http.HTTPStatus, detail: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return Response(status, f"{status.value} {status.phrase}: {detail}\n".encode(), headers=headers)


def _accepts_gzip(accept_encoding: str | None) -> bool:
    if not accept_encoding:
        return False
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip()
        if q.lower().startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False
