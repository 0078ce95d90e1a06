"""Client protocol frames: round trips through the codec, and strict validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.core import (
    Consistency,
    Frame,
    InvalidRequest,
    KVOp,
    KVRequest,
    decode_frame,
    decode_kv_request,
    encode_frame,
    encode_kv_request,
)

b = st.binary(max_size=30)
session = {"client_id": st.text(min_size=1, max_size=8), "seq": st.integers(0, 10**9)}
requests = st.one_of(
    st.builds(
        KVRequest,
        st.just(KVOp.GET),
        st.text(max_size=5),
        st.integers(0, 99),
        key=b,
        consistency=st.sampled_from(Consistency),
    ),
    st.builds(
        KVRequest,
        st.just(KVOp.PUT),
        st.text(max_size=5),
        st.integers(0, 99),
        key=b,
        value=b,
        **session,
    ),
    st.builds(KVRequest, st.just(KVOp.DELETE), st.text(max_size=5), st.integers(0, 9), key=b),
    st.builds(
        KVRequest,
        st.just(KVOp.CAS),
        st.text(max_size=5),
        st.integers(0, 9),
        key=b,
        expected=st.none() | b,
        value=st.none() | b,
        **session,
    ),
    st.builds(
        KVRequest,
        st.just(KVOp.BATCH),
        st.text(max_size=5),
        st.integers(0, 9),
        items=st.lists(st.tuples(b, st.none() | b), min_size=1, max_size=4).map(tuple),
        partition=st.integers(0, 63),
    ),
)


@given(requests)
def test_round_trip(req: KVRequest) -> None:
    frame = decode_frame(encode_frame(encode_kv_request(req)))
    assert decode_kv_request(frame) == req


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (Frame("kv.frob", {}, ()), "unknown key-value operation"),
        (Frame("other", {}, ()), "not a key-value request"),
        (Frame("kv.get", {}, ()), "takes 1 attachments, got 0"),
        (Frame("kv.put", {"ks": 5}, (b"k", b"v")), "'ks' must be str"),
        (Frame("kv.put", {"e": True}, (b"k", b"v")), "'e' must be int"),
        (Frame("kv.get", {"r": "eventual"}, (b"k",)), "consistency 'eventual' is not one of"),
        (Frame("kv.get", {"r": 5}, (b"k",)), "'r' must be str"),
        (Frame("kv.put", {"s": "1"}, (b"k", b"v")), "'s' must be int"),
        (Frame("kv.put", {"c": None}, (b"k", b"v")), "'c' must be str"),
        (Frame("kv.cas", {"k": 1.5}, (b"k", b"", b"v")), "'k' must be int"),
        (Frame("kv.batch", {"p": [1]}, (b"k",)), "kv.batch needs"),
    ],
)
def test_malformed_requests_are_invalid(frame: Frame, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode_kv_request(frame)


def test_requests_are_values() -> None:
    a = KVRequest(KVOp.PUT, "default", 3, key=b"k", value=b"v", client_id="c", seq=2)
    assert a == KVRequest(KVOp.PUT, "default", 3, b"k", b"v", client_id="c", seq=2)
    assert a != KVRequest(KVOp.PUT, "default", 3, key=b"k", value=b"w", client_id="c", seq=2)
    assert hash(a) == hash(
        KVRequest(KVOp.PUT, "default", 3, key=b"k", value=b"v", client_id="c", seq=2)
    )
    assert repr(a).startswith(
        "KVRequest(op=<KVOp.PUT: 'put'>, keyspace='default', epoch=3, key=b'k'"
    )
    assert KVRequest(KVOp.BATCH, "default", 0).partition == -1
