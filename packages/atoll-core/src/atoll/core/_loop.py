"""Which event loop a long-running Atoll process (a node, a load generator) runs on.

Owns: turning ``node.event_loop`` (or a command-line flag) into anyio's backend options.
Never: imports uvloop unless it is to be used; a library user's loop is their choice.

Why: uvloop runs the event loop, its timers and futures and the socket transports in C.
A node's time is mostly Python protocol code, but at 64 partitions asyncio's own Python
(the loop, selector transports, handles) was about a sixth of a node's busy time; with
uvloop a sequential write's p50 fell from 1.62 to 1.45 ms on the reference machine, and
the 50/50 mix went faster in slower phases (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from ._config import EVENT_LOOPS
from ._errors import ConfigError

__all__ = ["loop_options", "running_loop_name"]


def loop_options(event_loop: str = "auto", *, what: str = "node.event_loop") -> dict[str, Any]:
    """anyio's ``backend_options`` for ``event_loop`` (``auto``, ``uvloop`` or ``asyncio``).

    ``auto`` picks uvloop when it is installed. Asking for ``uvloop`` when it is not is a
    ConfigError naming ``what``; so is any other value.
    """
    if event_loop not in EVENT_LOOPS:
        raise ConfigError(f"{what} = {event_loop!r} is not one of {', '.join(EVENT_LOOPS)}")
    if event_loop == "asyncio":
        return {}
    if importlib.util.find_spec("uvloop") is None:
        if event_loop == "uvloop":
            raise ConfigError(
                f"{what} = 'uvloop' but uvloop is not installed "
                "(pip install uvloop, or choose 'auto' or 'asyncio')"
            )
        return {}
    return {"use_uvloop": True}


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: whose event loop the caller runs on ("" outside one)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return ""
    return type(loop).__module__.split(".")[0]
