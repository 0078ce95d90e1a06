"""Request coalescing: the key-value requests a client's tasks send to one node in the
same event-loop iteration travel as one ``kv.multi`` frame.

Owns: grouping requests per (node, timeout, read or write), the size limits of one
group, sending it and handing each caller its own reply or error.
Never: retries or routes (the client does, per request, exactly as without coalescing).

Why: at high concurrency most of a request's cost on both sides is per frame (encode,
decode, a task and a timer on the node, a future and a timer here). TiKV's client
batches commands to a store the same way. A request made while no other is in flight
goes out at once as a plain frame, so a sequential caller pays nothing; one alone in
its iteration under concurrency also goes as a plain frame, an iteration later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from atoll.core import (
    Frame,
    KVOp,
    Transport,
    Unavailable,
    decode_kv_multi_reply,
    encode_kv_multi,
)

__all__ = ["RequestCoalescer"]

_SOLO = Frame("solo")
"""Tells a caller whose group stayed a single request to send its own frame."""

_GET = "kv." + KVOp.GET.value


class _Group:
    __slots__ = ("bytes", "frames", "futures", "reads")

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.futures: list[asyncio.Future[Frame]] = []
        self.bytes = 0
        self.reads = 0


class RequestCoalescer:
    """Coalesces concurrent ``kv.*`` requests to the same node into ``kv.multi`` frames.

    :param transport: returns the transport to send on (the client's, which may change
        when it reconnects).
    :param max_requests: requests per frame at most.
    :param max_bytes: attachment bytes (keys and values) per frame at most.
    :param max_reads: reads per frame at most, so that the reply, whose values can each be
        as large as the value limit, stays below the transport's frame limit.
    """

    def __init__(
        self,
        transport: Callable[[], Transport],
        *,
        max_requests: int = 128,
        max_bytes: int = 4 * 1024 * 1024,
        max_reads: int = 32,
    ) -> None:
        self._transport = transport
        self.max_requests = max(1, max_requests)
        self.max_bytes = max(1, max_bytes)
        self.max_reads = max(1, max_reads)
        self._open: dict[tuple[str, float, bool], _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = 0
        """Requests between their call and their answer."""
        self.stats = {"frames": 0, "coalesced": 0}
        """``frames``: kv.multi frames sent; ``coalesced``: requests they carried."""

    async def request(self, address: str, frame: Frame, timeout: float) -> Frame:
        """Send ``frame`` to ``address`` (alone or with others); its reply or its error.

        A request made while no other is in flight goes out at once, as a plain frame:
        a client with one request at a time (a sequential caller) pays nothing for
        coalescing. Under concurrency requests are always in flight, so none skips it.
        """
        self._active += 1
        try:
            if self._active == 1:
                return await self._transport().request(address, frame, timeout=timeout)
            return await self._coalesced(address, frame, timeout)
        finally:
            self._active -= 1

    async def _coalesced(self, address: str, frame: Frame, timeout: float) -> Frame:
        loop = asyncio.get_running_loop()
        is_read = frame.type == _GET
        # Reads and writes travel in separate frames: a node answers a frame once every
        # request in it is done, and a (lease) read is done at once while a write waits
        # for its commit.
        key = (address, timeout, is_read)
        group = self._open.get(key)
        size = 0
        for a in frame.attachments:
            size += len(a)
        if group is not None and (
            len(group.frames) >= self.max_requests
            or group.bytes + size > self.max_bytes
            or (is_read and group.reads >= self.max_reads)
        ):
            del self._open[key]  # full: it is flushed as scheduled; start another
            group = None
        if group is None:
            group = self._open[key] = _Group()
            loop.call_soon(self._flush, key, group)
        fut: asyncio.Future[Frame] = loop.create_future()
        group.frames.append(frame)
        group.futures.append(fut)
        group.bytes += size
        group.reads += is_read
        reply = await fut
        if reply is _SOLO:
            return await self._transport().request(address, frame, timeout=timeout)
        return reply

    def _flush(self, key: tuple[str, float, bool], group: _Group) -> None:
        if self._open.get(key) is group:
            del self._open[key]
        if len(group.futures) == 1:
            fut = group.futures[0]
            if not fut.done():
                fut.set_result(_SOLO)
            return
        task = asyncio.get_running_loop().create_task(self._send(key[0], key[1], group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, address: str, timeout: float, group: _Group) -> None:
        futures = group.futures
        self.stats["frames"] += 1
        self.stats["coalesced"] += len(futures)
        try:
            reply = await self._transport().request(
                address, encode_kv_multi(group.frames), timeout=timeout
            )
            results = decode_kv_multi_reply(reply, len(futures))
        except asyncio.CancelledError:
            for fut in futures:
                if not fut.done():
                    fut.set_exception(Unavailable("the client was closed"))
            raise
        except Exception as exc:
            for fut in futures:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for fut, res in zip(futures, results, strict=True):
            if fut.done():
                continue  # its caller gave up
            if isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    async def close(self) -> None:
        """Stop the frames still in flight (their callers see Unavailable)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                pass
