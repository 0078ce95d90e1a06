"""Wire messages: round trips through real frames, size accounting, hostile input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.core import Frame, MemberInfo, MemberState, decode_frame, encode_frame
from atoll.membership import (
    Ack,
    Alive,
    Dead,
    ForeignGossip,
    Gossip,
    Heartbeats,
    MalformedGossip,
    Message,
    Nack,
    Ping,
    PingReq,
    Suspect,
    Sync,
    decode_message,
    encode_message,
    wire_size,
)

INFO = MemberInfo(
    node_id="n1", address="10.0.0.1:7401", zone="z1", rack="r2", host="h3",
    tags={"role": "data"}, version="0.1.0", meta_epoch=4, incarnation=9,
)  # fmt: skip
UPDATES = (Alive(INFO), Suspect("n2", 3, "n1"), Dead("n3", 1, "n3"))
SAMPLES: list[Message] = [
    Ping("n1", "10.0.0.1:7401", 5, "n2", UPDATES),
    Ack("n2", 5, UPDATES[1:]),
    PingReq("n1", "10.0.0.1:7401", 6, "n3", "10.0.0.3:7401", True, ()),
    Nack("n4", 6),
    Gossip("n1", UPDATES),
    Sync("n1", "10.0.0.1:7401", (INFO, MemberInfo("n5", "a5", state=MemberState.LEFT)), True),
    Heartbeats("n1", "10.0.0.1:7401", (("n1", 10), ("n2", 7)), UPDATES[:1], reply=True),
]


def _wire(msg: Message, cluster: str = "prod") -> Frame:
    return decode_frame(encode_frame(encode_message(msg, cluster)))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.KIND)
def test_round_trip_through_a_real_frame(msg: Message) -> None:
    assert decode_message(_wire(msg), "prod") == msg


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.KIND)
def test_wire_size_is_close_to_the_encoded_size(msg: Message) -> None:
    actual = len(encode_frame(encode_message(msg, "prod")))
    assert abs(wire_size(msg, "prod") - actual) <= max(12, actual * 0.15)


def test_update_sizes_are_cached_and_exact() -> None:
    import orjson

    for u in UPDATES:
        assert u.size == len(orjson.dumps(u.to_wire()))
    assert Dead("n3", 1, "n3").is_leave and not Dead("n3", 1, "n1").is_leave


def test_gossip_for_another_cluster_is_foreign() -> None:
    with pytest.raises(ForeignGossip, match="cluster 'prod'"):
        decode_message(_wire(Nack("n4", 1)), "staging")
    with pytest.raises(ForeignGossip, match="not a SWIM message"):
        decode_message(Frame("raft.append", {"c": "prod"}), "prod")


def _hdr(**h: Any) -> dict[str, Any]:
    return {"c": "prod", "s": "n1", **h}


@pytest.mark.parametrize(
    ("ftype", "header", "match"),
    [
        ("swim.ping", _hdr(r="a", q=-1, g="n2"), "seq"),
        ("swim.ping", _hdr(r="a", q=True, g="n2"), "seq"),
        ("swim.ping", _hdr(r="", q=1, g="n2"), "reply address"),
        ("swim.ack", {"c": "prod", "s": 5, "q": 1}, "sender"),
        ("swim.ack", _hdr(q=1, u=[["z", 1]]), "unknown update kind"),
        ("swim.ack", _hdr(q=1, u=[["s", "n2", 1]]), "unknown update kind"),
        ("swim.ack", _hdr(q=1, u="nope"), "updates"),
        ("swim.gossip", _hdr(u=[["a", "x" * 500, 1, "a", "", "", "", {}, "", 0]]), "node id"),
        ("swim.gossip", _hdr(u=[["a", "n", 1, "a", "", "", "", {"k": 1}, "", 0]]), "tag"),
        ("swim.gossip", _hdr(u=[["d", "n", 2**60, "n"]]), "incarnation"),
        ("swim.pingreq", _hdr(r="a", q=1, g="n2", ga="b", n="yes"), "nack flag"),
        ("swim.sync", _hdr(r="a", m=[["n", 0, "a"]], j=False, p=False), "sync member"),
        ("swim.sync", _hdr(r="a", m=[["n", 0, "a", "", "", "", {}, "", 0, "?"]], j=0, p=0), "sync"),
        ("swim.hb", _hdr(r="a", b=[["n1"]]), "heartbeat"),
        ("swim.teleport", _hdr(), "unknown SWIM message kind"),
    ],
)
def test_malformed_input_raises_a_clear_error(
    ftype: str, header: dict[str, Any], match: str
) -> None:
    with pytest.raises(MalformedGossip, match=match):
        decode_message(Frame(ftype, header), "prod")


def test_too_many_updates_are_refused() -> None:
    ups = [["s", "n2", 1, "n1"]] * 10_000
    with pytest.raises(MalformedGossip, match="at most"):
        decode_message(Frame("swim.gossip", _hdr(u=ups)), "prod")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=30,
)


@given(
    st.sampled_from(["ping", "ack", "pingreq", "nack", "gossip", "sync", "hb", "x"]),
    st.dictionaries(st.sampled_from([*list("csrqgnjpmbua"), "ga"]), json_values, max_size=8),
)
def test_fuzzed_headers_never_raise_anything_but_malformed_gossip(
    kind: str, header: dict[str, Any]
) -> None:
    header.setdefault("c", "prod")
    try:
        decode_message(Frame("swim." + kind, header), "prod")
    except MalformedGossip:
        pass
