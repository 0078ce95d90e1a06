"""The sliver of HTTP/1.1 the telemetry endpoint speaks, without IO.

Owns: finding the end of a request head in a byte buffer, parsing and validating it
into a :class:`Request` (request line, headers, query, keep-alive), and encoding a
:class:`Response`. Every malformed input becomes an :class:`HttpError` carrying the
status to answer with.
Never: reads or writes a socket, reads request bodies (the endpoint is GET/HEAD only),
or trusts a byte it has not validated: this parser faces whatever reaches the port.
"""

from __future__ import annotations

import http
import re
import urllib.parse
from typing import Final

import attrs

__all__ = [
    "ALLOWED_METHODS",
    "HttpError",
    "Request",
    "Response",
    "encode_response",
    "find_head_end",
    "parse_request_head",
]

ALLOWED_METHODS: Final = ("GET", "HEAD")
MAX_HEADERS: Final = 100

_TOKEN_RE: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION_RE: Final = re.compile(rb"HTTP/(\d)\.(\d)")
# Visible ASCII only: no spaces, controls or bytes >= 0x80 in a request target.
_TARGET_RE: Final = re.compile(rb"[\x21-\x7e]+")
_DIGITS_RE: Final = re.compile(r"[0-9]{1,18}")
_FIELD_VALUE_RE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


class HttpError(Exception):
    """A request the server refuses; ``status`` is the answer, ``detail`` the body."""

    def __init__(self, status: http.HTTPStatus, detail: str) -> None:
        super().__init__(f"{status.value} {status.phrase}: {detail}")
        self.status = status
        self.detail = detail


@attrs.frozen
class Request:
    """A validated request head."""

    method: str
    target: str
    """The request target as sent (``/readyz?verbose``)."""
    path: str
    """The decoded path, without the query (``/readyz``)."""
    query: dict[str, list[str]]
    """Query parameters; a bare ``?verbose`` maps to ``[""]``."""
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]
    """Header fields in order, names lowercased."""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive); repeated fields comma-joined."""
        wanted = name.lower()
        values = [v for n, v in self.headers if n == wanted]
        return ", ".join(values) if values else None

    @property
    def keep_alive(self) -> bool:
        """Whether the client asked to keep the connection open after this request."""
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens

    @property
    def has_body(self) -> bool:
        """Whether a body follows the head (which this server never reads)."""
        if self.header("transfer-encoding") is not None:
            return True
        length = self.header("content-length")
        # _check_framing has proven every listed value to be the same decimal number.
        return length is not None and int(length.split(",")[0]) > 0


@attrs.frozen
class Response:
    """A complete response; the body is always sent with a ``Content-Length``."""

    status: http.HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def find_head_end(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """Locate the blank line ending a request head.

    :return: ``(head_end, body_start)`` offsets, or None if the head is incomplete.
        A bare ``\\n\\n`` is accepted as well as ``\\r\\n\\r\\n`` (as most servers do).
    """
    crlf = buffer.find(b"\r\n\r\n")
    lf = buffer.find(b"\n\n")
    candidates = [(i, i + 4) for i in (crlf,) if i >= 0] + [(i, i + 2) for i in (lf,) if i >= 0]
    return min(candidates) if candidates else None


def parse_request_head(head: bytes) -> Request:
    """Parse a request head (everything before the blank line).

    :raises HttpError: 400 for anything malformed, 505 for an HTTP version other than
        1.x, 405 for a method other than GET or HEAD (checked after the head is known to
        be well formed, so garbage is a 400, never a 405).
    """
    lines = [line.removesuffix(b"\r") for line in head.split(b"\n")]
    while lines and not lines[0]:
        # RFC 9112 2.2: ignore empty lines before the request line.
        lines.pop(0)
    if not lines:
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "empty request")
    method_b, target_b, version = _parse_request_line(lines[0])
    headers = _parse_headers(lines[1:])
    path, query = _parse_target(target_b)
    request = Request(
        method=method_b.decode("ascii"),
        target=target_b.decode("ascii"),
        path=path,
        query=query,
        version=version,
        headers=headers,
    )
    _check_framing(request)
    if request.method not in ALLOWED_METHODS:
        raise HttpError(
            http.HTTPStatus.METHOD_NOT_ALLOWED,
            f"method {request.method} is not allowed; use {' or '.join(ALLOWED_METHODS)}",
        )
    return request


def encode_response(response: Response, *, keep_alive: bool, head_only: bool = False) -> bytes:
    """Serialise ``response``; with ``head_only`` the body is left out (HEAD requests)."""
    status = response.status
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


def _parse_request_line(line: bytes) -> tuple[bytes, bytes, tuple[int, int]]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(
            http.HTTPStatus.BAD_REQUEST,
            "malformed request line: expected 'METHOD /path HTTP/1.1'",
        )
    method, target, version_b = parts
    if not _TOKEN_RE.fullmatch(method):
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "malformed method in the request line")
    if not _TARGET_RE.fullmatch(target):
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "malformed request target")
    match = _VERSION_RE.fullmatch(version_b)
    if match is None:
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "malformed HTTP version")
    version = (int(match.group(1)), int(match.group(2)))
    if version[0] != 1:
        raise HttpError(
            http.HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
            f"HTTP/{version[0]}.{version[1]} is not supported; use HTTP/1.1",
        )
    return method, target, version


def _parse_headers(lines: list[bytes]) -> tuple[tuple[str, str], ...]:
    if len(lines) > MAX_HEADERS:
        raise HttpError(
            http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"more than {MAX_HEADERS} header fields",
        )
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(http.HTTPStatus.BAD_REQUEST, "obsolete header line folding")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN_RE.fullmatch(name):
            raise HttpError(http.HTTPStatus.BAD_REQUEST, "malformed header field")
        value = value.strip(b" \t")
        if not _FIELD_VALUE_RE.fullmatch(value):
            raise HttpError(http.HTTPStatus.BAD_REQUEST, "control character in a header value")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
    return tuple(headers)


def _parse_target(target: bytes) -> tuple[str, dict[str, list[str]]]:
    text = target.decode("ascii")
    if text.startswith(("http://", "https://")):
        # Absolute form (RFC 9112 3.2.2): keep only the path and the query.
        parts = urllib.parse.urlsplit(text)
        raw_path, raw_query = parts.path or "/", parts.query
    elif text.startswith("/"):
        raw_path, _, raw_query = text.partition("?")
    else:
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "request target must start with '/'")
    raw_path = raw_path.partition("#")[0]
    try:
        path = urllib.parse.unquote(raw_path, errors="strict")
        query = urllib.parse.parse_qs(
            raw_query, keep_blank_values=True, strict_parsing=False, errors="strict"
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "undecodable request target") from exc
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "control character in the path")
    return path, query


def _check_framing(request: Request) -> None:
    if request.version >= (1, 1) and request.header("host") is None:
        raise HttpError(http.HTTPStatus.BAD_REQUEST, "missing required Host header")
    lengths = [v for n, v in request.headers if n == "content-length"]
    if lengths:
        values = {v.strip() for v in ",".join(lengths).split(",")}
        if len(values) != 1 or not _DIGITS_RE.fullmatch(next(iter(values))):
            raise HttpError(http.HTTPStatus.BAD_REQUEST, "invalid Content-Length")
