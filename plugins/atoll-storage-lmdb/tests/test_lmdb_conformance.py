"""The storage conformance suite run against the LMDB engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from atoll.core import StorageEngine
from atoll.testing._storage_conformance import StorageConformance, open_engine_via_plugin

PLUGIN = "atoll.storage.lmdb._plugin"


class TestLmdbConformance(StorageConformance):
    backend = "lmdb"
    plugin = PLUGIN
    max_key_bytes = 511  # LMDB's compile-time MDB_MAXKEYSIZE
    can_corrupt = True
    can_fill_disk = True

    def corrupt_files(self, data_dir: Path) -> None:
        # Overwrite both meta pages: LMDB can no longer recognise the file.
        with open(data_dir / "lmdb" / "data.mdb", "r+b") as f:
            f.write(b"\x5a" * 8192)

    @contextlib.contextmanager
    def full_disk_engine(self, tmp_path: Path) -> Iterator[StorageEngine]:
        # A 4 MiB map with no room to grow is a full disk as far as LMDB can tell.
        engine = open_engine_via_plugin(PLUGIN, "lmdb", tmp_path, map_size_mb=4)
        try:
            yield engine
        finally:
            engine.close()
