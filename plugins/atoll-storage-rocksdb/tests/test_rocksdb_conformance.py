"""The storage conformance suite run against the RocksDB engine."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.core import StorageEngine, StorageError
from atoll.testing._storage_conformance import StorageConformance, open_engine_via_plugin

PLUGIN = "atoll.storage.rocksdb._plugin"


@contextlib.contextmanager
def small_tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """Mount a ``size_mb`` tmpfs at ``path`` (needs root and CAP_SYS_ADMIN), else skip."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class TestRocksdbConformance(StorageConformance):
    backend = "rocksdb"
    plugin = PLUGIN
    engine_options = {"block_cache_mb": 8, "write_buffer_mb": 4}
    exact_key_counts = False  # rocksdb.estimate-num-keys
    can_corrupt = True
    can_fill_disk = True

    def corrupt_files(self, data_dir: Path) -> None:
        # Damage the MANIFEST (the file RocksDB replays to find its tables).
        for entry in (data_dir / "rocksdb").iterdir():
            if entry.name.startswith("MANIFEST-"):
                size = entry.stat().st_size
                with open(entry, "r+b") as f:
                    f.seek(min(16, size // 2))
                    f.write(b"\x5a" * 64)

    @contextlib.contextmanager
    def full_disk_engine(self, tmp_path: Path) -> Iterator[StorageEngine]:
        with small_tmpfs(tmp_path / "small", 8) as mount:
            engine = open_engine_via_plugin(
                PLUGIN, "rocksdb", mount, options={"write_buffer_mb": 1, "block_cache_mb": 1}
            )
            try:
                yield engine
            finally:
                # After ENOSPC RocksDB refuses writes until reopened; closing reports it.
                with contextlib.suppress(StorageError):
                    engine.close()
