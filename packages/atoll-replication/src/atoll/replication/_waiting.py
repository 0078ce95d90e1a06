"""The awaiting half of :class:`~atoll.replication._group.RaftGroup`'s operations.

Owns: waiting for a proposal's or a read's waiter under a deadline.
Never: starts or answers operations (``_group`` does, compiled when built; async code
stays here, interpreted).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from atoll.core.rpc import settle

if TYPE_CHECKING:
    from ._group import _Waiter

__all__ = ["propose", "read_barrier", "wait"]


async def wait(w: _Waiter, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``w``; whether it was set."""
    if w.done:
        return True
    handle = asyncio.get_running_loop().call_later(timeout, settle, w.future)
    try:
        await w.future
    finally:
        handle.cancel()
    return w.done


async def propose(w: _Waiter, timeout: float) -> Any:
    """The result of the proposal ``w`` waits for; raises Timeout or its error."""
    if not await wait(w, timeout):
        w.abandon()
        raise w.timeout_error(timeout)
    if w.error is not None:
        raise w.error
    return w.result


async def read_barrier(w: _Waiter | None, timeout: float) -> None:
    """Return once the read ``w`` waits for may be served (at once for None)."""
    if w is None:
        return
    if not await wait(w, timeout):
        w.abandon()
        raise w.timeout_error(timeout)
    if w.error is not None:
        raise w.error
