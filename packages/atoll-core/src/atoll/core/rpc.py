"""Request/reply bookkeeping and handler invocation shared by every transport backend.

A toolkit for transport implementers (tcp, nats and memory use it), so request pairing,
error replies and background-task hosting behave identically on every backend.

Owns: pairing replies with pending requests by request id, turning a handler's outcome
(a frame, None, an AtollError, any other exception) into an encoded reply, and hosting the
transport's background tasks.
Never: touches sockets; never lets a handler's exception escape into the transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from ._codec import FLAG_ERROR, FLAG_REPLY, FLAG_REQUEST, Frame, encode_frame
from ._errors import AtollError, FrameError, FrameTooLarge, Timeout, error_from_wire, error_to_wire
from ._transport import FrameHandler

__all__ = [
    "PendingRequests",
    "TaskHost",
    "answer",
    "as_request",
    "deliver_one_way",
    "encode_within",
    "result_of",
    "settle",
    "settle_all",
]


def settle(fut: asyncio.Future[None]) -> None:
    """Complete ``fut`` with None unless it is already done: the wake-up a deadline
    timer (``loop.call_later(timeout, settle, fut)``) or a release gives a waiter, which
    then tells by its own state whether it was served or timed out."""
    if not fut.done():
        fut.set_result(None)


def settle_all(futures: list[asyncio.Future[None]]) -> None:
    """:func:`settle` each of ``futures`` (one timer for a group of waiters)."""
    for fut in futures:
        settle(fut)


class _Slot:
    """One request waiting for its reply (an asyncio future: the cheapest wakeup there is)."""

    __slots__ = ("error", "future", "peer", "reply", "rid")

    def __init__(self, rid: int, peer: str) -> None:
        self.rid = rid
        self.peer = peer
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reply: Frame | None = None
        self.error: BaseException | None = None

    async def wait(self) -> None:
        """Return once the reply (or an error) is in; cancellable by any cancel scope."""
        await self.future

    def _done(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class PendingRequests:
    """Requests in flight, by request id; each knows which peer it went to."""

    def __init__(self) -> None:
        self._next = 0
        self._slots: dict[int, _Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def open(self, peer: str) -> _Slot:
        """Allocate a request id and a slot its reply will fill."""
        self._next += 1
        slot = _Slot(self._next, peer)
        self._slots[slot.rid] = slot
        return slot

    def discard(self, slot: _Slot) -> None:
        """Forget ``slot`` (answered, timed out or failed)."""
        self._slots.pop(slot.rid, None)

    def resolve(self, reply: Frame) -> bool:
        """Hand ``reply`` to its waiting request; False if nobody waits for it any more."""
        slot = self._slots.pop(reply.request_id, None)
        if slot is None:
            return False
        slot.reply = reply
        slot._done()
        return True

    def fail(self, rid: int, error: BaseException) -> None:
        """Fail the request ``rid`` if it is still waiting."""
        slot = self._slots.pop(rid, None)
        if slot is not None:
            slot.error = error
            slot._done()

    def fail_peer(self, peer: str, error: BaseException) -> int:
        """Fail every request sent to ``peer``; returns how many."""
        doomed = [s for s in self._slots.values() if s.peer == peer]
        for s in doomed:
            self.fail(s.rid, error)
        return len(doomed)

    async def call(
        self,
        address: str,
        frame: Frame,
        *,
        timeout: float,
        encode: Callable[[Frame], bytes],
        send: Callable[[bytes, int], Awaitable[None]],
    ) -> Frame:
        """One request/reply round: stamp ``frame`` with a fresh request id, ``encode``
        it, ``send(data, rid)`` it, and wait up to ``timeout`` seconds for the reply.

        ``send`` raises (PeerUnreachable, ...) if the frame cannot go; the peer's error
        reply is raised here as its AtollError.

        :raises Timeout: no reply within ``timeout``.
        """
        slot = self.open(address)
        try:
            data = encode(as_request(frame, slot.rid))
            with anyio.move_on_after(timeout) as scope:
                await send(data, slot.rid)
                await slot.wait()
            if scope.cancelled_caught:
                raise Timeout(f"no reply to {frame.type!r} from {address} within {timeout}s")
            return result_of(slot)
        finally:
            self.discard(slot)

    def fail_all(self, error: BaseException) -> None:
        """Fail every waiting request (the transport is closing)."""
        for rid in list(self._slots):
            self.fail(rid, error)


def as_request(frame: Frame, rid: int) -> Frame:
    """``frame`` stamped as request ``rid``."""
    return Frame(frame.type, frame.header, frame.attachments, rid, FLAG_REQUEST)


def encode_within(frame: Frame, max_frame_mb: int) -> bytes:
    """Encode ``frame``, refusing it locally if it exceeds ``transport.max_frame_mb``."""
    data = encode_frame(frame)
    if len(data) - 4 > max_frame_mb * 1024 * 1024:
        raise FrameTooLarge(
            f"frame {frame.type!r} of {len(data) - 4} bytes exceeds "
            f"transport.max_frame_mb = {max_frame_mb}"
        )
    return data


def result_of(slot: _Slot) -> Frame:
    """The reply of a completed slot, or raise its error (local or the peer's)."""
    if slot.error is not None:
        raise slot.error
    reply = slot.reply
    assert reply is not None
    if reply.is_error:
        raise error_from_wire(reply.header)
    return reply


def _error_reply(rid: int, exc: AtollError) -> bytes:
    frame = Frame("error", error_to_wire(exc), (), rid, FLAG_REPLY | FLAG_ERROR)
    try:
        return encode_frame(frame)
    except FrameError:
        generic = error_to_wire(AtollError(f"{exc.code}: {exc.message}"))
        return encode_frame(Frame("error", generic, (), rid, FLAG_REPLY | FLAG_ERROR))


async def answer(handler: FrameHandler, frame: Frame, sender: str, log: logging.Logger) -> bytes:
    """Run ``handler`` on the request ``frame`` and return the encoded reply.

    None becomes an empty ``ok`` frame; an AtollError travels as an error reply; any other
    exception is logged with its traceback and answered with a generic error.
    """
    rid = frame.request_id
    try:
        result = await handler(frame, sender)
    except AtollError as exc:
        return _error_reply(rid, exc)
    except Exception as exc:
        log.exception("handler failed on request %r from %s", frame.type, sender)
        return _error_reply(
            rid, AtollError(f"internal error handling {frame.type!r} ({type(exc).__name__})")
        )
    reply = Frame("ok") if result is None else result
    try:
        return encode_frame(Frame(reply.type, reply.header, reply.attachments, rid, FLAG_REPLY))
    except FrameError as exc:
        log.error("handler reply to %r from %s cannot be encoded: %s", frame.type, sender, exc)
        return _error_reply(rid, AtollError(f"reply to {frame.type!r} cannot be encoded"))


async def deliver_one_way(
    handler: FrameHandler, frame: Frame, sender: str, log: logging.Logger
) -> None:
    """Run ``handler`` on a one-way frame; its exceptions are logged, never raised."""
    try:
        await handler(frame, sender)
    except Exception:
        log.exception("handler failed on one-way frame %r from %s", frame.type, sender)


class TaskHost:
    """Hosts a transport's background tasks in one anyio task group.

    The task group lives in its own asyncio task, so ``start`` and ``stop`` may be called
    from different tasks (a node starts its transport in one task and closes it in a
    signal handler's). Tasks started here must catch their own errors: one escaping
    would tear the whole transport down, so it is logged here as a last resort.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._tg: anyio.abc.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = anyio.Event()

    async def start(self) -> None:
        """Start the host task; returns once tasks can be spawned."""
        ready = anyio.Event()

        async def host() -> None:
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    ready.set()
                    await self._stopping.wait()
                    tg.cancel_scope.cancel()
            except Exception:
                self._log.exception("transport background task crashed")
            finally:
                self._tg = None
                ready.set()

        self._task = asyncio.get_running_loop().create_task(host())
        await ready.wait()

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the background (no-op once stopped)."""
        if self._tg is not None and not self._stopping.is_set():
            self._tg.start_soon(self._guard, fn, *args)

    async def _guard(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await fn(*args)
        except Exception:
            self._log.exception("transport task %s failed", getattr(fn, "__name__", fn))

    async def stop(self) -> None:
        """Cancel every hosted task and wait for them to finish."""
        self._stopping.set()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            await asyncio.shield(task)
