"""A Hypothesis state machine that checks a storage engine against a dict model.

Owns: :func:`run_storage_state_machine` and the rules it runs (put, delete, batches
with delete_range, scans in both directions, gets, snapshots taken/read/closed, and
close-then-reopen for durable engines), and the model pieces other engine-like tests
reuse: the :data:`batch_op` strategy, :func:`apply_ops` and :func:`scan_model`.
Never: depends on a particular backend; the caller passes an ``open_engine`` factory.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from atoll.core import StorageEngine, StorageSnapshot, WriteBatch

__all__ = [
    "Model",
    "OpenEngine",
    "apply_ops",
    "batch_op",
    "run_storage_state_machine",
    "scan_model",
]

OpenEngine = Callable[[Path, bool], StorageEngine]
"""``open_engine(data_dir, sync)`` -> an open engine."""

_NAMESPACES = ("a", "b")
_MAX_SNAPSHOTS = 3

# A small alphabet with the byte values that break signed or text ordering, so keys
# collide often and ranges are interesting.
_keys = st.lists(
    st.sampled_from([0x00, 0x01, 0x61, 0x62, 0x7F, 0x80, 0xFE, 0xFF]), min_size=1, max_size=3
).map(bytes)
_bounds = st.none() | _keys
_values = st.binary(max_size=8)
_ns = st.sampled_from(_NAMESPACES)
batch_op = st.one_of(
    st.tuples(st.just("put"), _ns, _keys, _values),
    st.tuples(st.just("delete"), _ns, _keys, st.just(b"")),
    st.tuples(st.just("delete_range"), _ns, _keys, _keys),
)
"""One operation of a batch, ``(kind, namespace, a, b)``, over namespaces "a" and "b"
(a delete_range whose start is not below its end is skipped by :func:`apply_ops`)."""

Model = dict[str, dict[bytes, bytes]]
"""Per namespace, the keys and values an engine should hold."""


def apply_ops(model: Model, ops: list[tuple[str, str, bytes, bytes]]) -> WriteBatch:
    """Apply ``ops`` (drawn from :data:`batch_op`) to ``model``; the same operations as
    a :class:`WriteBatch` for the engine under test."""
    batch = WriteBatch()
    for kind, ns, a, b in ops:
        if kind == "put":
            batch.put(ns, a, b)
            model[ns][a] = b
        elif kind == "delete":
            batch.delete(ns, a)
            model[ns].pop(a, None)
        elif a < b:
            batch.delete_range(ns, a, b)
            for k in [k for k in model[ns] if a <= k < b]:
                del model[ns][k]
    return batch


def scan_model(
    data: dict[bytes, bytes],
    start: bytes | None,
    end: bytes | None,
    reverse: bool,
    limit: int | None,
) -> list[tuple[bytes, bytes]]:
    """What a scan of one namespace's ``data`` should return."""
    keys = sorted(k for k in data if (start is None or k >= start) and (end is None or k < end))
    if reverse:
        keys.reverse()
    return [(k, data[k]) for k in keys[:limit]]


def run_storage_state_machine(
    open_engine: OpenEngine,
    tmp_path: Path,
    *,
    durable: bool,
    max_examples: int = 20,
    steps: int = 40,
) -> None:
    """Run the model-checking state machine; each example gets a fresh directory.

    :param durable: include the "close and reopen" rule (data must survive it).
    """
    dirs = itertools.count()

    class StorageMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.path = tmp_path / f"example-{next(dirs)}"
            self.path.mkdir()
            self.engine = open_engine(self.path, False)
            for ns in _NAMESPACES:
                self.engine.create_namespace(ns)
            self.model: Model = {ns: {} for ns in _NAMESPACES}
            self.snapshots: list[tuple[StorageSnapshot, Model]] = []

        @rule(ns=_ns, key=_keys, value=_values, sync=st.booleans())
        def put(self, ns: str, key: bytes, value: bytes, sync: bool) -> None:
            self.engine.write(apply_ops(self.model, [("put", ns, key, value)]), sync=sync)

        @rule(ns=_ns, key=_keys)
        def delete(self, ns: str, key: bytes) -> None:
            self.engine.write(apply_ops(self.model, [("delete", ns, key, b"")]))

        @rule(ops=st.lists(batch_op, min_size=1, max_size=8), sync=st.booleans())
        def batch(self, ops: list[tuple[str, str, bytes, bytes]], sync: bool) -> None:
            self.engine.write(apply_ops(self.model, ops), sync=sync)

        @rule(ns=_ns, key=_keys)
        def get(self, ns: str, key: bytes) -> None:
            assert self.engine.get(ns, key) == self.model[ns].get(key)

        @rule(
            ns=_ns,
            start=_bounds,
            end=_bounds,
            reverse=st.booleans(),
            limit=st.none() | st.integers(0, 4),
        )
        def scan(
            self,
            *,
            ns: str,
            start: bytes | None,
            end: bytes | None,
            reverse: bool,
            limit: int | None,
        ) -> None:
            got = list(self.engine.scan(ns, start, end, reverse=reverse, limit=limit))
            assert got == scan_model(self.model[ns], start, end, reverse, limit)

        @precondition(lambda self: len(self.snapshots) < _MAX_SNAPSHOTS)
        @rule()
        def take_snapshot(self) -> None:
            frozen = {ns: dict(data) for ns, data in self.model.items()}
            self.snapshots.append((self.engine.snapshot(), frozen))

        @precondition(lambda self: bool(self.snapshots))
        @rule(
            data=st.data(),
            ns=_ns,
            start=_bounds,
            end=_bounds,
            reverse=st.booleans(),
            key=_keys,
        )
        def read_snapshot(
            self,
            *,
            data: st.DataObject,
            ns: str,
            start: bytes | None,
            end: bytes | None,
            reverse: bool,
            key: bytes,
        ) -> None:
            i = data.draw(st.integers(0, len(self.snapshots) - 1))
            snap, frozen = self.snapshots[i]
            got = list(snap.scan(ns, start, end, reverse=reverse))
            assert got == scan_model(frozen[ns], start, end, reverse, None)
            assert snap.get(ns, key) == frozen[ns].get(key)

        @precondition(lambda self: bool(self.snapshots))
        @rule(data=st.data())
        def close_snapshot(self, data: st.DataObject) -> None:
            i = data.draw(st.integers(0, len(self.snapshots) - 1))
            snap, _ = self.snapshots.pop(i)
            snap.close()

        @precondition(lambda self: durable)
        @rule(sync=st.booleans())
        def reopen(self, sync: bool) -> None:
            for snap, _ in self.snapshots:
                snap.close()
            self.snapshots.clear()
            self.engine.close()
            self.engine = open_engine(self.path, sync)

        @invariant()
        def namespaces_stable(self) -> None:
            assert self.engine.namespaces() == list(_NAMESPACES)

        def teardown(self) -> None:
            for snap, _ in self.snapshots:
                snap.close()
            self.engine.close()

    run_state_machine_as_test(
        StorageMachine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
