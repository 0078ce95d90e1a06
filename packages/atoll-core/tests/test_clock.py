"""Injected clocks: the offset clock and the file-driven clock chaos tests skew."""

from __future__ import annotations

import json
from pathlib import Path

from atoll.core import (
    TEST_CLOCK_ENV,
    FileClock,
    OffsetClock,
    SystemClock,
    clock_from_env,
)


class Manual:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t


def test_offset_clock_scales_and_shifts() -> None:
    base = Manual()
    c = OffsetClock(base, offset=5.0, rate=0.5)
    assert c.now() == 105.0
    base.t = 110.0
    assert c.now() == 110.0  # 100 + 10 * 0.5 + 5


def test_clock_from_env_is_the_system_clock_unless_fault_injection_asks(tmp_path: Path) -> None:
    assert isinstance(clock_from_env({}), SystemClock)
    path = tmp_path / "clock.json"
    path.write_text(json.dumps({"rate": 1.0, "offset_ms": 0}))
    c = clock_from_env({TEST_CLOCK_ENV: str(path)})
    assert isinstance(c, FileClock)
    a = c.now()
    assert c.now() >= a


def test_file_clock_never_goes_backwards(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    c = FileClock(path, poll=0.0)
    first = c.now()
    path.write_text(json.dumps({"rate": 1.0, "offset_ms": 2000}))
    jumped = c.now()
    assert jumped - first >= 1.9
    path.write_text(json.dumps({"rate": 1.0, "offset_ms": -5000}))
    assert c.now() >= jumped
