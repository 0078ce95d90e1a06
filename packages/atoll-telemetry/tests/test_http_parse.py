"""The sans-IO HTTP/1.1 request parser: valid heads, every kind of garbage, framing."""

from __future__ import annotations

import http

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.telemetry._http import (
    HttpError,
    Response,
    encode_response,
    find_head_end,
    parse_request_head,
)


def test_a_plain_get_parses() -> None:
    req = parse_request_head(
        b"GET /readyz?verbose&exclude=a&exclude=b HTTP/1.1\r\nHost: x\r\nX-Y:  z "
    )
    assert req.method == "GET"
    assert req.path == "/readyz"
    assert req.query == {"verbose": [""], "exclude": ["a", "b"]}
    assert req.version == (1, 1)
    assert req.header("HOST") == "x"
    assert req.header("x-y") == "z"
    assert req.keep_alive
    assert not req.has_body


def test_absolute_form_and_percent_encoding() -> None:
    req = parse_request_head(b"GET http://node:9100/readyz/meta%2Dleader HTTP/1.1\r\nHost: n")
    assert req.path == "/readyz/meta-leader"


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: x", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, Close", False),
        (b"GET / HTTP/1.0", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive", True),
    ],
)
def test_keep_alive_follows_the_version_and_connection_header(
    head: bytes, keep_alive: bool
) -> None:
    assert parse_request_head(head).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"", 400),
        (b"\r\n\r\n", 400),
        (b"GET", 400),
        (b"GET /", 400),
        (b"GET  / HTTP/1.1\r\nHost: x", 400),
        (b"GET / HTTP/1.1 extra\r\nHost: x", 400),
        (b"G\x00T / HTTP/1.1\r\nHost: x", 400),
        (b"GET /\xff HTTP/1.1\r\nHost: x", 400),
        (b"GET metrics HTTP/1.1\r\nHost: x", 400),
        (b"GET /%ff HTTP/1.1\r\nHost: x", 400),
        (b"GET /%00 HTTP/1.1\r\nHost: x", 400),
        (b"GET / HTTP/1.1", 400),  # HTTP/1.1 requires Host
        (b"GET / HTTP/1.1\r\nHost x", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded", 400),
        (b"GET / HTTP/1.1\r\nHo st: x", 400),
        (b"GET / HTTP/1.1\r\nHost: x\x00y", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2", 400),
        (b"GET / HTTP/x.y\r\nHost: x", 400),
        (b"GET / SPDY/3\r\nHost: x", 400),
        (b"GET / HTTP/2.0\r\nHost: x", 505),
        (b"POST /metrics HTTP/1.1\r\nHost: x", 405),
        (b"DELETE /readyz HTTP/1.1\r\nHost: x", 405),
        (b"GET / HTTP/1.1\r\nHost: x" + b"\r\nX: y" * 101, 431),
    ],
)
def test_garbage_is_refused_with_the_right_status(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_request_head(head)
    assert info.value.status == status


def test_a_body_is_detected_so_the_connection_can_be_closed() -> None:
    with_length = parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5")
    assert with_length.has_body
    repeated = parse_request_head(
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5"
    )
    assert repeated.has_body
    chunked = parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked")
    assert chunked.has_body
    assert not parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0").has_body


def test_find_head_end_accepts_crlf_and_bare_lf() -> None:
    assert find_head_end(b"GET / HTTP/1.0\r\n") is None
    assert find_head_end(b"GET / HTTP/1.0\r\n\r\nrest") == (14, 18)
    assert find_head_end(b"GET / HTTP/1.0\n\nrest") == (14, 16)


def test_encode_response_sets_length_and_connection() -> None:
    data = encode_response(
        Response(http.HTTPStatus.OK, b"ok\n", headers=(("Vary", "Accept-Encoding"),)),
        keep_alive=True,
    )
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 3\r\n" in head
    assert b"\r\nConnection: keep-alive" in head
    assert b"\r\nVary: Accept-Encoding" in head
    assert body == b"ok\n"
    only_head = encode_response(
        Response(http.HTTPStatus.OK, b"ok\n"), keep_alive=False, head_only=True
    )
    assert only_head.endswith(b"Connection: close\r\n\r\n")
    assert b"Content-Length: 3" in only_head


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_http_error(data: bytes) -> None:
    try:
        request = parse_request_head(data)
    except HttpError as exc:
        assert 400 <= exc.status < 600
    else:
        assert request.method in ("GET", "HEAD")
        assert request.path.startswith("/")
        request.keep_alive  # noqa: B018 - must not raise on any accepted head
        request.has_body  # noqa: B018


@given(
    st.lists(
        st.sampled_from(
            [
                *(b"GET", b"HEAD", b" ", b"/", b"/readyz", b"?", b"verbose", b"HTTP/1.1"),
                *(b"\r\n", b"Host: x", b":", b"%", b"\x00", b"\xff", b"Content-Length: 3"),
                *(b"\n", b"\t"),
            ]
        ),
        max_size=30,
    )
)
def test_near_miss_requests_parse_or_raise_http_error(parts: list[bytes]) -> None:
    data = b"".join(parts)
    try:
        request = parse_request_head(data)
    except HttpError:
        return
    request.keep_alive  # noqa: B018
    request.has_body  # noqa: B018
