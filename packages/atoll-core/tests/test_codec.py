"""Frame codec: round trips, incremental decoding, and refusal of bad input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.core import (
    FLAG_REQUEST,
    Frame,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    UnsupportedVersion,
    decode_frame,
    encode_frame,
)

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
headers = st.dictionaries(st.text(max_size=10), json_scalars, max_size=5)
frames = st.builds(
    Frame,
    type=st.text(min_size=1, max_size=20),
    header=headers,
    attachments=st.lists(st.binary(max_size=300), max_size=4).map(tuple),
    request_id=st.integers(0, 2**53),
    flags=st.integers(0, 7),
)


@given(frames)
def test_round_trip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


@given(st.lists(frames, min_size=1, max_size=6), st.integers(1, 50))
def test_incremental_decoder_any_split(fs: list[Frame], chunk: int) -> None:
    data = b"".join(encode_frame(f) for f in fs)
    dec = FrameDecoder()
    out: list[Frame] = []
    for i in range(0, len(data), chunk):
        out.extend(dec.feed(data[i : i + chunk]))
    assert out == fs
    assert dec.buffered == 0


def test_large_attachments_are_raw_bytes() -> None:
    big = bytes(range(256)) * 40_000
    f = Frame("put", {"k": 1}, (b"key", big), request_id=9, flags=FLAG_REQUEST)
    data = encode_frame(f)
    assert big in data  # travels raw, never base64
    assert decode_frame(data).attachments[1] == big


def test_frames_with_many_attachments_round_trip() -> None:
    """Past 4,096 attachments the encoder joins them in slices (so a thread encoding a
    big snapshot lets the event loop run); the bytes are the same."""
    atts = tuple(b"%d" % i * (i % 7) for i in range(10_001))
    f = Frame("kvsnap", {"n": [5000, 0]}, atts)
    data = encode_frame(f)
    assert data.endswith(b"".join(atts))  # the attachments, in order, after the header
    assert decode_frame(data) == f
    assert len(data) == 4 + int.from_bytes(data[:4], "big")


def test_oversized_frame_refused_before_buffering() -> None:
    dec = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(FrameTooLarge, match="exceeds the limit of 1024"):
        dec.feed(struct.pack(">I", 10_000) + b"x")


def test_unknown_version_refused() -> None:
    data = bytearray(encode_frame(Frame("ping")))
    data[4] = 99
    with pytest.raises(UnsupportedVersion, match="version 99"):
        decode_frame(bytes(data))


@pytest.mark.parametrize(
    "body",
    [
        b"\x01" + struct.pack(">I", 3) + b"{{{",  # not JSON
        b"\x01" + struct.pack(">I", 2) + b"[]",  # not an object
        b"\x01" + struct.pack(">I", 8) + b'{"t":""}',  # empty type
        b"\x01" + struct.pack(">I", 99) + b"{}",  # header longer than frame
        b"\x01" + struct.pack(">I", 16) + b'{"t":"x","a":[5]}'[:16],  # attachments missing
        b"\x01\x00",  # too short
    ],
)
def test_garbage_raises_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(struct.pack(">I", len(body)) + body)


@pytest.mark.parametrize(
    "sizes",
    [b"[-1,2]", b"[1.5]", b'["1"]', b"[null]", b'{"x":1}', b"3", b"[[1]]"],
)
def test_bad_attachment_sizes_raise_frame_error(sizes: bytes) -> None:
    header = b'{"t":"x","a":' + sizes + b"}"
    body = b"\x01" + struct.pack(">I", len(header)) + header + b"x"
    with pytest.raises(FrameError, match="attachment lengths"):
        decode_frame(struct.pack(">I", len(body)) + body)


@pytest.mark.parametrize("size", [10, 3 * 1024 * 1024])
def test_attachments_round_trip_small_and_large_frames(size: int) -> None:
    """Frames up to 1 MiB are copied whole before slicing, larger ones sliced from the
    buffer: both give back exactly the attachments sent."""
    atts = (b"", b"a" * size, bytes(range(256)) * 3, b"z")
    data = encode_frame(Frame("blob", {"n": 1}, atts, 9, 1))
    (got,) = FrameDecoder().feed(data[:7] + data[7:])
    assert got.attachments == atts and all(type(a) is bytes for a in got.attachments)
    assert decode_frame(data) == Frame("blob", {"n": 1}, atts, 9, 1)


def test_attachment_length_mismatch() -> None:
    header = b'{"t":"x","a":[2]}'
    body = b"\x01" + struct.pack(">I", len(header)) + header + b"abc"
    with pytest.raises(FrameError, match="declare 2 bytes but 3 follow"):
        decode_frame(struct.pack(">I", len(body)) + body)


def test_unserialisable_header() -> None:
    with pytest.raises(FrameError, match="not JSON-serialisable"):
        encode_frame(Frame("x", {"bad": object()}))


def test_frames_are_values() -> None:
    a = Frame("kv.get", {"ks": "default"}, (b"k",), 7, FLAG_REQUEST)
    assert a == Frame("kv.get", {"ks": "default"}, (b"k",), 7, FLAG_REQUEST)
    assert a != Frame("kv.get", {"ks": "default"}, (b"k",), 8, FLAG_REQUEST)
    assert a != ("kv.get", {"ks": "default"}, (b"k",), 7, FLAG_REQUEST)
    assert repr(a) == (
        "Frame(type='kv.get', header={'ks': 'default'}, attachments=(b'k',), request_id=7, flags=1)"
    )
    # Each frame gets its own empty header (never one shared dict).
    b, c = Frame("x"), Frame("x")
    b.header["n"] = 1
    assert c.header == {} and Frame(type="x", request_id=3).request_id == 3
    with pytest.raises(TypeError):  # a dict header is unhashable, as it was with attrs
        hash(a)
