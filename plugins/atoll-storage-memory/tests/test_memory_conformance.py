"""The storage conformance suite run against the in-memory engine."""

from __future__ import annotations

from atoll.testing._storage_conformance import StorageConformance


class TestMemoryConformance(StorageConformance):
    backend = "memory"
    plugin = "atoll.storage.memory._plugin"
    durable = False
    on_disk = False
