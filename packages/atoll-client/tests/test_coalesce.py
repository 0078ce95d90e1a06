"""Request coalescing: concurrent requests to one node share a kv.multi frame, and each
caller still gets its own reply or error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.client._coalesce import RequestCoalescer
from atoll.core import (
    KV_MULTI,
    Frame,
    InvalidRequest,
    KVOp,
    KVRequest,
    NotLeader,
    Timeout,
    decode_kv_multi,
    decode_kv_multi_reply,
    encode_kv_multi,
    encode_kv_multi_reply,
    encode_kv_request,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def put(key: bytes, value: bytes = b"v") -> Frame:
    return encode_kv_request(KVRequest(KVOp.PUT, "default", 3, key=key, value=value))


def get(key: bytes) -> Frame:
    return encode_kv_request(KVRequest(KVOp.GET, "default", 3, key=key))


class FakeTransport:
    """Answers each request with the key it carried; keys starting with "bad" fail."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, Frame]] = []
        self.fail = fail

    def answer(self, f: Frame) -> Frame | Exception:
        if f.attachments[0].startswith(b"bad"):
            return NotLeader("not me", leader_hint="n9")
        return Frame(f.type + ".ok", {"k": f.attachments[0].decode()})

    async def request(self, address: str, frame: Frame, *, timeout: float) -> Frame:
        self.sent.append((address, frame))
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        if frame.type == KV_MULTI:
            return encode_kv_multi_reply([self.answer(f) for f in decode_kv_multi(frame)])
        r = self.answer(frame)
        if isinstance(r, Exception):
            raise r
        return r


async def test_a_lone_request_goes_out_as_a_plain_frame() -> None:
    t = FakeTransport()
    c = RequestCoalescer(lambda: t)  # type: ignore[arg-type,return-value]
    reply = await c.request("a:1", put(b"k1"), 1.0)
    assert reply.header == {"k": "k1"}
    assert [f.type for _, f in t.sent] == ["kv.put"]


async def test_concurrent_requests_share_one_frame_per_node_and_get_their_own_replies() -> None:
    t = FakeTransport()
    c = RequestCoalescer(lambda: t)  # type: ignore[arg-type,return-value]
    jobs = [("a:1", b"a%d" % i) for i in range(5)] + [("b:1", b"b%d" % i) for i in range(3)]
    replies = await asyncio.gather(*(c.request(addr, get(k), 1.0) for addr, k in jobs))
    assert [r.header["k"] for r in replies] == [k.decode() for _, k in jobs]
    # The first found nothing in flight and went at once; the others joined frames.
    assert sorted((addr, f.type, len(f.header.get("q", ()))) for addr, f in t.sent) == [
        ("a:1", "kv.get", 0),
        ("a:1", KV_MULTI, 4),
        ("b:1", KV_MULTI, 3),
    ]
    assert c.stats == {"frames": 2, "coalesced": 7}


async def test_a_request_made_while_another_is_in_flight_waits_for_the_iteration() -> None:
    """Only a request with nothing else in flight skips coalescing: under concurrency a
    request alone in its event-loop iteration still takes the coalescing path (and goes
    as a plain frame, as the only one of its group)."""
    gate = asyncio.Event()

    class Held(FakeTransport):
        async def request(self, address: str, frame: Frame, *, timeout: float) -> Frame:
            if frame.attachments[0] == b"k1":
                self.sent.append((address, frame))
                await gate.wait()
                return Frame("kv.put.ok", {"k": "k1"})
            return await super().request(address, frame, timeout=timeout)

    t = Held()
    c = RequestCoalescer(lambda: t)  # type: ignore[arg-type,return-value]
    first = asyncio.ensure_future(c.request("a:1", put(b"k1"), 1.0))
    await asyncio.sleep(0)
    assert len(t.sent) == 1  # sent at once: nothing else was in flight
    r2 = await c.request("a:1", put(b"k2"), 1.0)  # alone in its iteration
    r3, r4 = await asyncio.gather(
        c.request("a:1", put(b"k3"), 1.0), c.request("a:1", put(b"k4"), 1.0)
    )
    gate.set()
    assert (await first).header == {"k": "k1"}
    assert [r.header["k"] for r in (r2, r3, r4)] == ["k2", "k3", "k4"]
    assert [f.type for _, f in t.sent] == ["kv.put", "kv.put", KV_MULTI]
    assert c.stats == {"frames": 1, "coalesced": 2}


async def test_reads_and_writes_travel_in_separate_frames() -> None:
    """A node answers a frame when all its requests are done: a read must not wait for
    the commit of a write it happened to travel with."""
    t = FakeTransport()
    c = RequestCoalescer(lambda: t)  # type: ignore[arg-type,return-value]
    frames = [put(b"w0"), get(b"r1"), put(b"w1"), get(b"r2"), put(b"w2"), put(b"w3")]
    await asyncio.gather(*(c.request("a:1", f, 1.0) for f in frames))
    sent = sorted((f.header["q"][0][0], len(f.header["q"])) for _, f in t.sent[1:])
    assert t.sent[0][1].type == "kv.put"  # the first: nothing else was in flight
    assert sent == [("kv.get", 2), ("kv.put", 3)]


async def test_limits_split_a_group() -> None:
    t = FakeTransport()
    c = RequestCoalescer(lambda: t, max_requests=2, max_reads=1)  # type: ignore[arg-type,return-value]
    await asyncio.gather(*(c.request("a:1", put(b"p%d" % i), 1.0) for i in range(5)))
    assert sorted(len(f.header.get("q", [1])) for _, f in t.sent) == [1, 2, 2]
    t.sent.clear()
    await asyncio.gather(*(c.request("a:1", get(b"g%d" % i), 1.0) for i in range(3)))
    assert [f.type for _, f in t.sent] == ["kv.get"] * 3  # one read per frame at most
    t.sent.clear()
    c.max_bytes = 10
    await asyncio.gather(*(c.request("a:1", put(b"k%d" % i, b"x" * 6), 1.0) for i in range(2)))
    assert len(t.sent) == 2


async def test_each_request_fails_on_its_own() -> None:
    t = FakeTransport()
    c = RequestCoalescer(lambda: t)  # type: ignore[arg-type,return-value]
    out = await asyncio.gather(
        c.request("a:1", put(b"good"), 1.0),
        c.request("a:1", put(b"bad"), 1.0),
        return_exceptions=True,
    )
    assert isinstance(out[0], Frame) and out[0].header == {"k": "good"}
    assert isinstance(out[1], NotLeader) and out[1].leader_hint == "n9"


async def test_a_failed_frame_fails_every_request_in_it() -> None:
    t = FakeTransport(fail=Timeout("no answer"))
    c = RequestCoalescer(lambda: t)  # type: ignore[arg-type,return-value]
    out = await asyncio.gather(
        *(c.request("a:1", put(b"k%d" % i), 1.0) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, Timeout) for o in out)


async def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    t = FakeTransport()
    c = RequestCoalescer(lambda: t)  # type: ignore[arg-type,return-value]
    quitter = asyncio.ensure_future(c.request("a:1", put(b"q"), 1.0))
    stayer = asyncio.ensure_future(c.request("a:1", put(b"s"), 1.0))
    await asyncio.sleep(0)
    quitter.cancel()
    assert (await stayer).header == {"k": "s"}
    with pytest.raises(asyncio.CancelledError):
        await quitter


def test_multi_frames_round_trip() -> None:
    frames = [put(b"a", b"1"), get(b"b"), put(b"c", b"")]
    assert decode_kv_multi(encode_kv_multi(frames)) == frames
    replies: list[Any] = [Frame("kv.value", {"f": True}, (b"x",)), InvalidRequest("nope")]
    back = decode_kv_multi_reply(encode_kv_multi_reply(replies), 2)
    assert back[0] == replies[0]
    assert isinstance(back[1], InvalidRequest) and back[1].message == "nope"
    with pytest.raises(InvalidRequest, match="2 results for 3"):
        decode_kv_multi_reply(encode_kv_multi_reply(replies), 3)


@given(
    q=st.one_of(
        st.none(),
        st.integers(),
        st.lists(st.one_of(st.integers(), st.text(), st.lists(st.text(), max_size=3))),
        st.lists(st.tuples(st.text(max_size=8), st.dictionaries(st.text(), st.integers()))),
    ),
    n=st.one_of(
        st.none(), st.lists(st.one_of(st.integers(-2, 3), st.sampled_from([1.0, 0.5])), max_size=4)
    ),
    atts=st.lists(st.binary(max_size=4), max_size=4),
)
def test_malformed_multi_frames_are_invalid_requests(q: Any, n: Any, atts: list[bytes]) -> None:
    if isinstance(q, list):
        q = [list(x) if isinstance(x, tuple) else x for x in q]
    frame = Frame(KV_MULTI, {"q": q, "n": n}, tuple(atts))
    try:
        subs = decode_kv_multi(frame)
    except InvalidRequest:
        return
    assert all(s.type.startswith("kv.") and s.type != KV_MULTI for s in subs)
    assert sum(len(s.attachments) for s in subs) == len(atts)
