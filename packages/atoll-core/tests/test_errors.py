"""Error taxonomy: every error survives the wire with its code and details."""

from __future__ import annotations

import orjson
import pytest

from atoll.core import (
    AtollError,
    DiskFull,
    InvalidRequest,
    NotLeader,
    StaleEpoch,
    StorageError,
    Timeout,
    Unavailable,
    error_from_wire,
    error_to_wire,
)


@pytest.mark.parametrize(
    "exc",
    [
        NotLeader("go away", leader_hint="n3"),
        StaleEpoch(epoch=42),
        Unavailable("no quorum"),
        Timeout("deadline"),
        InvalidRequest("empty key"),
        DiskFull("no space on /data"),
    ],
)
def test_round_trip_through_json(exc: AtollError) -> None:
    doc = orjson.loads(orjson.dumps(error_to_wire(exc)))
    back = error_from_wire(doc)
    assert type(back) is type(exc)
    assert back.message == exc.message
    assert back.details == exc.details


def test_not_leader_keeps_hint_and_is_retryable() -> None:
    back = error_from_wire(error_to_wire(NotLeader(leader_hint="n2")))
    assert isinstance(back, NotLeader)
    assert back.leader_hint == "n2"
    assert back.retryable


def test_unknown_code_from_a_newer_peer_is_still_an_error() -> None:
    back = error_from_wire({"code": "from_the_future", "message": "hm", "details": {"x": 1}})
    assert type(back) is AtollError
    assert back.message == "hm"


def test_hierarchy() -> None:
    assert issubclass(DiskFull, StorageError)
    assert not InvalidRequest.retryable
