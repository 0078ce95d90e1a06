"""``atoll-node --config node.toml``: run one node until SIGTERM or SIGINT.

Owns: argument parsing, logging set-up (JSON lines or human-readable), signal handling
and exit codes: 0 after a clean stop, 2 for a bad configuration or plugin (one clear
line on stderr), 1 for any other failure to start.
Never: contains node logic (see ``_node``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from typing import Any

import anyio
import orjson

from atoll.core import (
    AtollError,
    ConfigError,
    PluginError,
    StorageError,
    load_config,
    loop_options,
    native,
    running_loop_name,
    tune_gc,
)

from ._node import Node

__all__ = ["main"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``atoll-node`` command."""
    ap = argparse.ArgumentParser(prog="atoll-node", description="Run one Atoll node.")
    ap.add_argument("--config", "-c", help="path to node.toml (default: built-in defaults)")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ap.add_argument("--log-format", default="text", choices=["text", "json"])
    args = ap.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config)
        backend_options = loop_options(config.node.event_loop)
        node = Node(config)
    except (ConfigError, PluginError) as exc:
        print(f"atoll-node: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        logging.getLogger("atoll.node").info("event loop: %s", running_loop_name())
        for package, state in native.status().items():
            logging.getLogger("atoll.node").info(
                "%s: %s",
                package,
                "native (mypyc)" if state == "native" else f"pure Python, {state}",
            )
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                await tg.start(node.run)
                tune_gc()  # started: what is alive now lives as long as the node

                async def watch() -> None:
                    async for sig in signals:
                        logging.getLogger("atoll.node").info(
                            "received %s, stopping", signal.Signals(sig).name
                        )
                        node.stop()
                        return

                tg.start_soon(watch)

    t0 = time.monotonic()
    try:
        anyio.run(serve, backend_options=backend_options)
    except (ConfigError, PluginError) as exc:
        print(f"atoll-node: {exc}", file=sys.stderr)
        return 2
    except (StorageError, AtollError, OSError) as exc:
        print(f"atoll-node: failed: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("atoll.node").info("stopped after %.1fs", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
