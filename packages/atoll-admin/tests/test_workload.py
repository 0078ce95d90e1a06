"""run_workload against a fake client: every operation is issued once and measured,
errors are counted, and progress adds up to the operations done."""

from __future__ import annotations

import pytest

from atoll.admin import run_workload
from atoll.core import Unavailable

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClient:
    def __init__(self, fail_every: int = 0) -> None:
        self.data: dict[bytes, bytes] = {}
        self.calls = 0
        self.fail_every = fail_every

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise Unavailable("fake outage")

    async def get(self, key: bytes) -> bytes | None:
        self._maybe_fail()
        return self.data.get(key)

    async def put(self, key: bytes, value: bytes) -> None:
        self._maybe_fail()
        self.data[key] = value


async def test_issues_every_operation_once_and_reports_progress_in_steps() -> None:
    client = FakeClient()
    updates: list[int] = []
    res = await run_workload(
        client,  # type: ignore[arg-type]
        ops=1_050,
        concurrency=16,
        read_fraction=0.3,
        keys=50,
        value_size=10,
        progress=updates.append,
    )
    assert client.calls == 1_050
    assert res.ops == 1_050 and res.errors == 0
    assert res.reads + res.writes == 1_050 and 200 < res.reads < 430
    assert sum(updates) == 1_050  # every operation is reported, the remainder at the end
    assert len(updates) <= 1_050 // 10 + 1  # in steps of about 1 %, not one per operation
    assert all(len(v) == 10 for v in client.data.values()) and len(client.data) <= 50


async def test_failed_operations_are_counted_not_measured() -> None:
    client = FakeClient(fail_every=10)
    updates: list[int] = []
    res = await run_workload(
        client,  # type: ignore[arg-type]
        ops=500,
        concurrency=8,
        progress=updates.append,
    )
    assert res.errors == 50
    assert res.ops == 450 and len(res.latencies) == 450
    assert sum(updates) == 450
