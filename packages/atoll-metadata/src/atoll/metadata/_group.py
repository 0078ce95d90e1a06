"""The meta group's state machine as a Raft group applies it, persisted in the engine.

Owns: keeping the applied cluster map and its applied index durable in the node's storage
engine (namespace ``meta``), snapshots of the map, and notifying the node when the epoch
changes.
Never: proposes anything or talks to peers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from atoll.core import StorageEngine, WriteBatch

from ._model import ClusterMap
from ._statemachine import MetaStateMachine, Placer

__all__ = ["MetaGroupStateMachine"]

NS_META = "meta"
_K_APPLIED = b"applied"
_K_MAP = b"map"
_Q = struct.Struct(">Q")


class MetaGroupStateMachine:
    """Implements the Raft host's ``GroupStateMachine`` for the meta group.

    :param on_change: called with the new map after an apply that bumped the epoch.
    """

    def __init__(
        self,
        engine: StorageEngine,
        *,
        placer: Placer | None = None,
        on_change: Callable[[ClusterMap], None] | None = None,
    ) -> None:
        self.engine = engine
        engine.create_namespace(NS_META)
        raw = engine.get(NS_META, _K_MAP)
        self.sm = MetaStateMachine(placer, ClusterMap.from_json(raw) if raw else None)
        applied = engine.get(NS_META, _K_APPLIED)
        self._applied = _Q.unpack(applied)[0] if applied else 0
        self.on_change = on_change

    @property
    def map(self) -> ClusterMap:
        """The latest applied cluster map."""
        return self.sm.map

    def applied_index(self) -> int:
        """The last applied index."""
        return self._applied

    def apply(self, entries: Sequence[Any], batch: WriteBatch) -> list[Any]:
        """Apply committed entries (conf changes and no-ops only advance the index)."""
        before = self.sm.map.epoch
        out: list[Any] = []
        for e in entries:
            if e.index <= self._applied:
                out.append({"ok": True, "epoch": self.sm.map.epoch, "duplicate": True})
                continue
            if int(e.kind) == 0 and e.data:
                out.append(self.sm.apply(e.data))
            else:
                out.append({"ok": True, "epoch": self.sm.map.epoch})
            self._applied = e.index
        batch.put(NS_META, _K_APPLIED, _Q.pack(self._applied))
        if self.sm.map.epoch != before:
            batch.put(NS_META, _K_MAP, self.sm.map.to_json())
            if self.on_change is not None:
                self.on_change(self.sm.map)
        return out

    def snapshot(self) -> bytes:
        """The applied index (8 bytes) followed by the map as JSON."""
        return _Q.pack(self._applied) + self.sm.map.to_json()

    def restore(self, data: bytes, batch: WriteBatch) -> None:
        """Replace the map (and applied index) with a snapshot's."""
        self._applied = _Q.unpack_from(data)[0]
        self.sm.map = ClusterMap.from_json(data[_Q.size :])
        batch.put(NS_META, _K_MAP, data[_Q.size :])
        batch.put(NS_META, _K_APPLIED, data[: _Q.size])
        if self.on_change is not None:
            self.on_change(self.sm.map)
