"""A blocking wrapper around :class:`AtollClient` for code that is not async.

Owns: an event loop in a background thread (anyio's blocking portal) and the blocking
methods that forward to the async client.
Never: duplicates routing or retry logic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from atoll.core import Consistency

from ._client import AtollClient, CasResult

__all__ = ["SyncClient"]


class SyncClient:
    """Blocking client: ``with SyncClient(["127.0.0.1:7401"]) as c: c.put(b"k", b"v")``.

    Takes the same keyword arguments as :class:`AtollClient`.
    """

    def __init__(self, endpoints: Sequence[str], **kwargs: Any) -> None:
        self._args = (list(endpoints), kwargs)
        self._cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._client: AtollClient | None = None

    def __enter__(self) -> SyncClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Start the background loop and connect."""
        self._cm = start_blocking_portal()
        self._portal = self._cm.__enter__()
        endpoints, kwargs = self._args
        self._client = AtollClient(endpoints, **kwargs)
        self._portal.call(self._client.connect)

    def close(self) -> None:
        """Close the client and stop the background loop."""
        if self._portal is not None and self._client is not None:
            self._portal.call(self._client.close)
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
        self._cm = self._portal = self._client = None

    def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._portal is None or self._client is None:
            raise RuntimeError("SyncClient is not connected")
        return self._portal.call(lambda: fn(*args, **kwargs))

    @property
    def client(self) -> AtollClient:
        """The underlying async client."""
        if self._client is None:
            raise RuntimeError("SyncClient is not connected")
        return self._client

    def get(
        self, key: bytes, *, consistency: Consistency | str = Consistency.LINEARIZABLE, **kw: Any
    ) -> bytes | None:
        """See :meth:`AtollClient.get`."""
        return self._run(self.client.get, key, consistency=consistency, **kw)  # type: ignore[no-any-return]

    def put(self, key: bytes, value: bytes, **kw: Any) -> None:
        """See :meth:`AtollClient.put`."""
        self._run(self.client.put, key, value, **kw)

    def delete(self, key: bytes, **kw: Any) -> bool:
        """See :meth:`AtollClient.delete`."""
        return self._run(self.client.delete, key, **kw)  # type: ignore[no-any-return]

    def cas(self, key: bytes, expected: bytes | None, new: bytes | None, **kw: Any) -> CasResult:
        """See :meth:`AtollClient.cas`."""
        return self._run(self.client.cas, key, expected, new, **kw)  # type: ignore[no-any-return]

    def put_many(self, items: Mapping[bytes, bytes | None], **kw: Any) -> None:
        """See :meth:`AtollClient.put_many`."""
        self._run(self.client.put_many, items, **kw)
