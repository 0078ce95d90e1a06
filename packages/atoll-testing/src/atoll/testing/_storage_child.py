"""A child process for the storage conformance kill tests: write with sync, then die.

Owns: the writer side of "durability across a killed process". Run as
``python -m atoll.testing._storage_child PLUGIN BACKEND DATA_DIR OPTIONS_JSON MODE COUNT``.
It opens the engine through the plugin manager (as a node does), writes batches of
three keys with ``sync=True`` and prints ``ack <i>`` after each returns. ``MODE`` is
``self`` (after ``COUNT`` batches print ``done`` and SIGKILL itself) or ``loop`` (after
``COUNT`` batches print ``ready`` and keep writing until the parent kills it).
Never: closes the engine or flushes anything beyond what ``write(sync=True)`` did.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys

from atoll.core import StorageConfig, WriteBatch, make_plugin_manager, open_storage

__all__ = ["KILL_NAMESPACE", "batch_keys", "batch_value", "main"]

KILL_NAMESPACE = "kill"


def batch_keys(i: int) -> list[bytes]:
    """The three keys batch ``i`` writes (they must appear together or not at all)."""
    return [b"k/%08d/%s" % (i, part) for part in (b"a", b"b", b"c")]


def batch_value(i: int) -> bytes:
    """The value every key of batch ``i`` gets."""
    return b"%08d" % i + b"\xab" * 92


def main(argv: list[str]) -> int:
    """Entry point; see the module docstring for the arguments."""
    plugin, backend, data_dir, options_json, mode, count_s = argv
    count = int(count_s)
    pm = make_plugin_manager([importlib.import_module(plugin)], load_entry_points=False)
    config = StorageConfig(backend=backend, sync=True, options=json.loads(options_json))
    engine = open_storage(pm, config, data_dir)
    engine.create_namespace(KILL_NAMESPACE)
    out = sys.stdout
    i = 0
    while True:
        batch = WriteBatch()
        for key in batch_keys(i):
            batch.put(KILL_NAMESPACE, key, batch_value(i))
        engine.write(batch, sync=True)
        out.write(f"ack {i}\n")
        out.flush()
        i += 1
        if i == count:
            if mode == "self":
                out.write("done\n")
                out.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            out.write("ready\n")
            out.flush()


if __name__ == "__main__":  # pragma: no cover - exercised in a subprocess
    sys.exit(main(sys.argv[1:]))
