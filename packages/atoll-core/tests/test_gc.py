"""tune_gc: start-up objects are frozen, young collections become rare, cycles still go."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from atoll.core import tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_freezes_survivors_and_raises_the_young_threshold(restore_gc: None) -> None:
    _, middle, old = gc.get_threshold()
    tune_gc(12_345)
    assert gc.get_threshold() == (12_345, middle, old)
    assert gc.get_freeze_count() > 0


def test_cyclic_garbage_is_still_collected(restore_gc: None) -> None:
    tune_gc(100)
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    for _ in range(3):  # allocate past the young threshold a few times
        _ = [[] for _ in range(1_000)]
    assert ref() is None


def test_rejects_a_nonsense_threshold() -> None:
    with pytest.raises(ValueError, match="young threshold"):
        tune_gc(0)
