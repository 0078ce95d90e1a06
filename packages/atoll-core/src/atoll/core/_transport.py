"""The transport contract every backend (memory, TCP, NATS) implements.

Owns: the :class:`Transport` protocol and the :data:`FrameHandler` signature.
Never: knows about any particular backend.

The contract:

* A transport has an ``address``: an opaque string other nodes use to reach it
  ("127.0.0.1:7401" for TCP, "atoll.n1" for NATS). Membership gossips it.
* ``send`` is one-way and best-effort: it may drop the frame if the peer is down
  (Raft and SWIM tolerate loss); it never blocks forever.
* ``request`` waits for the handler's reply on the peer and raises :class:`Timeout`,
  :class:`PeerUnreachable` or the peer's own :class:`AtollError`.
* Frames from one sender to one receiver arrive in the order they were sent.
* A malformed or oversized inbound frame is logged and closes that connection; the
  node keeps serving everyone else.
* Outbound queues are bounded: a slow peer exerts backpressure on ``send``/``request``
  rather than growing memory without limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from ._codec import Frame

__all__ = ["FrameHandler", "Transport"]

FrameHandler = Callable[[Frame, str], Awaitable[Frame | None]]
"""``async handler(frame, sender_address) -> reply``.

For a one-way frame the return value is ignored. For a request, the returned frame is
the reply; returning None replies with an empty ``ok`` frame; raising an
:class:`AtollError` replies with that error. Other exceptions are logged and answered
with a generic error, never propagated into the transport.
"""


@runtime_checkable
class Transport(Protocol):
    """Moves frames between nodes (and between clients and nodes)."""

    @property
    def backend(self) -> str:
        """The backend name that selected this transport ("tcp", "nats", "memory")."""
        ...

    @property
    def address(self) -> str:
        """Where peers reach this transport. Valid once :meth:`start` has returned."""
        ...

    async def start(self, handler: FrameHandler) -> None:
        """Begin accepting frames, dispatching each to ``handler``. Returns once listening."""
        ...

    async def send(self, address: str, frame: Frame) -> None:
        """Send a one-way frame. Best-effort: a down peer means the frame is dropped."""
        ...

    async def request(self, address: str, frame: Frame, *, timeout: float) -> Frame:
        """Send ``frame`` and return the peer's reply, or raise within ``timeout`` seconds."""
        ...

    async def close(self) -> None:
        """Stop accepting, close connections, fail pending requests. Idempotent."""
        ...
