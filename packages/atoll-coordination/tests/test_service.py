"""The request router's two phases: single requests and kv.multi frames over fake groups
whose proposals and reads complete (or not) when the test says."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from atoll.coordination import CommandResult, KVService, KVStateMachine
from atoll.core import (
    Frame,
    InvalidRequest,
    KVOp,
    KVRequest,
    LimitsConfig,
    NotLeader,
    Timeout,
    Unavailable,
    decode_kv_multi_reply,
    encode_kv_multi,
    encode_kv_request,
)
from atoll.metadata import ClusterMap, KeyspaceRecord, ReplicaSet
from atoll.storage.memory import MemoryEngine

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakePending:
    def __init__(self) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done = False
        self.result: Any = None
        self.error: Exception | None = None
        self.abandoned = False

    def finish(self, result: Any = None, error: Exception | None = None) -> None:
        self.result, self.error, self.done = result, error, True
        self.future.set_result(None)

    def abandon(self) -> None:
        self.abandoned = not self.done

    def timeout_error(self, timeout: float) -> Timeout:
        return Timeout(f"fake not applied in {timeout}s")


class FakeGroup:
    def __init__(self, gid: int, leader: bool = True) -> None:
        self.group_id = gid
        self.is_leader = leader
        self.leader_id = "me" if leader else "other"
        self.proposals: list[tuple[bytes, FakePending]] = []

    def start_proposal(self, data: bytes) -> FakePending:
        p = FakePending()
        self.proposals.append((data, p))
        return p

    def start_read(self) -> FakePending | None:
        return None

    def wake(self) -> None:
        pass


def service(groups: dict[int, FakeGroup], timeout: float = 5.0) -> KVService:
    ks = KeyspaceRecord("default", 1, 3, first_group=1)
    cmap = ClusterMap(
        epoch=1,
        keyspaces={"default": ks},
        groups={1: ReplicaSet(1, "default", 0, ("me", "a", "b"))},
    )

    class Host:
        def group(self, gid: int) -> FakeGroup | None:
            return groups.get(gid)

    return KVService(
        "me", Host(), KVStateMachine(MemoryEngine()), lambda: cmap, request_timeout=timeout
    )


def put(key: bytes) -> Frame:
    return encode_kv_request(KVRequest(KVOp.PUT, "default", 0, key=key, value=b"v"))


async def test_a_multi_frame_waits_for_all_under_one_deadline() -> None:
    g = FakeGroup(1)
    svc = service({1: g}, timeout=0.2)
    frames = [put(b"a"), put(b"b"), put(b"c"), put(b"d")]
    task = asyncio.ensure_future(svc.handle(encode_kv_multi(frames), "client"))
    while len(g.proposals) < 4:
        await asyncio.sleep(0.001)
    g.proposals[0][1].finish(CommandResult())
    g.proposals[1][1].finish(error=Unavailable("replaced by a newer leader"))
    g.proposals[3][1].finish("not a command result")
    results = decode_kv_multi_reply(await task, 4)
    assert isinstance(results[0], Frame) and results[0].type == "kv.put.ok"
    assert isinstance(results[1], Unavailable)
    assert isinstance(results[2], Timeout) and g.proposals[2][1].abandoned
    assert "rejected" in str(results[3])
    assert not g.proposals[0][1].abandoned


async def test_a_single_request_that_times_out_is_withdrawn() -> None:
    g = FakeGroup(1)
    svc = service({1: g}, timeout=0.05)
    with pytest.raises(Timeout, match="fake not applied"):
        await svc.handle(put(b"a"), "client")
    assert g.proposals[0][1].abandoned


async def test_a_follower_answers_each_request_with_not_leader() -> None:
    svc = service({1: FakeGroup(1, leader=False)})
    reply = await svc.handle(encode_kv_multi([put(b"a"), put(b"b")]), "client")
    results = decode_kv_multi_reply(reply, 2)
    assert all(isinstance(r, NotLeader) and r.leader_hint == "other" for r in results)


async def test_limits_set_after_construction_apply_to_the_next_request() -> None:
    g = FakeGroup(1)
    svc = service({1: g})
    svc.limits = LimitsConfig(max_value_bytes=4)
    big = encode_kv_request(KVRequest(KVOp.PUT, "default", 0, key=b"k", value=b"12345"))
    with pytest.raises(InvalidRequest, match="value of 5 bytes exceeds the limit of 4 bytes"):
        await svc.handle(big, "client")
    assert svc.stats["invalid"] == 1 and not g.proposals
