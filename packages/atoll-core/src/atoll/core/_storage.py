"""The storage engine contract every backend (memory, LMDB, RocksDB) implements.

Owns: :class:`WriteBatch`, the :class:`StorageEngine` and :class:`StorageSnapshot`
protocols, :class:`StorageStats`, and the validation shared by all backends.
Never: knows about any particular backend.

The contract (DESIGN.md section 8):

* Named namespaces (column families / sub-databases) isolate key spaces.
* A :class:`WriteBatch` is applied atomically: all of it or none of it is visible,
  before and after a crash.
* ``write(batch, sync=True)`` returns only once the batch is durable on disk.
* ``scan`` iterates in unsigned byte order, forward or reverse, over ``[start, end)``.
* ``snapshot()`` is a point-in-time view unaffected by later writes.
* A full disk raises :class:`DiskFull`; unreadable files raise :class:`CorruptData`.

Calls are synchronous and may block on disk: async callers run them in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import attrs

from ._errors import InvalidRequest

__all__ = [
    "MAX_KEY_BYTES",
    "OP_DELETE",
    "OP_DELETE_RANGE",
    "OP_PUT",
    "StorageEngine",
    "StorageSnapshot",
    "StorageStats",
    "WriteBatch",
    "check_namespace",
]

OP_PUT = 0
OP_DELETE = 1
OP_DELETE_RANGE = 2

MAX_KEY_BYTES = 64 * 1024
"""Hard engine-level key limit; the client-facing limit (4 KiB by default) is lower."""

_NS_RE = re.compile(r"^[a-z0-9_.-]{1,64}$")


_VALID_NAMESPACES: set[str] = set()
"""Names that passed :func:`check_namespace` (a cache of a pure check; bounded by the
handful of namespaces a node uses, and never more than _MAX_CACHED_NAMESPACES)."""
_MAX_CACHED_NAMESPACES = 1024


def check_namespace(name: object) -> str:
    """Return ``name`` if it is a valid namespace name, else raise :class:`InvalidRequest`."""
    if type(name) is str and name in _VALID_NAMESPACES:
        return name
    if not isinstance(name, str) or not _NS_RE.match(name):
        raise InvalidRequest(
            f"namespace {name!r} is not valid (1-64 characters of a-z, 0-9, '_', '.', '-')"
        )
    if len(_VALID_NAMESPACES) < _MAX_CACHED_NAMESPACES:
        _VALID_NAMESPACES.add(name)
    return name


def _check_bytes(what: str, value: object, *, allow_empty: bool = False) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidRequest(f"{what} must be bytes, not {type(value).__name__}")
    b = bytes(value)
    if not b and not allow_empty:
        raise InvalidRequest(f"{what} must not be empty")
    return b


class WriteBatch:
    """An ordered list of puts and deletes applied atomically by ``StorageEngine.write``.

    Within a batch later operations win over earlier ones on the same key.
    """

    __slots__ = ("_bytes", "ops")

    def __init__(self) -> None:
        self.ops: list[tuple[int, str, bytes, bytes]] = []
        self._bytes = 0

    def put(self, namespace: str, key: bytes, value: bytes) -> WriteBatch:
        """Set ``key`` to ``value`` in ``namespace``."""
        # Fast path for the common case (plain bytes, a namespace seen before): this runs
        # several times per replicated write on every node.
        if (
            type(key) is bytes
            and type(value) is bytes
            and 0 < len(key) <= MAX_KEY_BYTES
            and type(namespace) is str
            and namespace in _VALID_NAMESPACES
        ):
            self.ops.append((OP_PUT, namespace, key, value))
            self._bytes += len(key) + len(value)
            return self
        k = _check_bytes("key", key)
        if len(k) > MAX_KEY_BYTES:
            raise InvalidRequest(f"key of {len(k)} bytes exceeds the {MAX_KEY_BYTES}-byte limit")
        v = _check_bytes("value", value, allow_empty=True)
        self.ops.append((OP_PUT, check_namespace(namespace), k, v))
        self._bytes += len(k) + len(v)
        return self

    def delete(self, namespace: str, key: bytes) -> WriteBatch:
        """Remove ``key`` from ``namespace`` (absent keys are fine)."""
        if (  # the fast path, as in put (session results are deleted one by one)
            type(key) is bytes
            and len(key) > 0
            and type(namespace) is str
            and namespace in _VALID_NAMESPACES
        ):
            self.ops.append((OP_DELETE, namespace, key, b""))
            self._bytes += len(key)
            return self
        k = _check_bytes("key", key)
        self.ops.append((OP_DELETE, check_namespace(namespace), k, b""))
        self._bytes += len(k)
        return self

    def delete_range(self, namespace: str, start: bytes, end: bytes) -> WriteBatch:
        """Remove every key in ``[start, end)`` from ``namespace``."""
        s = _check_bytes("range start", start, allow_empty=True)
        e = _check_bytes("range end", end)
        if s >= e:
            raise InvalidRequest(f"delete_range start {s!r} is not below end {e!r}")
        self.ops.append((OP_DELETE_RANGE, check_namespace(namespace), s, e))
        self._bytes += len(s) + len(e)
        return self

    def __len__(self) -> int:
        return len(self.ops)

    def __bool__(self) -> bool:
        return bool(self.ops)

    @property
    def size_bytes(self) -> int:
        """Bytes of keys and values in the batch."""
        return self._bytes

    def extend(self, other: WriteBatch) -> WriteBatch:
        """Append every operation of ``other`` (used to group-commit many batches)."""
        self.ops.extend(other.ops)
        self._bytes += other._bytes
        return self


@attrs.frozen
class StorageStats:
    """Size and usage figures an engine reports."""

    backend: str
    path: str | None
    disk_bytes: int
    """Bytes the engine's files occupy on disk (0 for in-memory)."""
    keys: dict[str, int]
    """Approximate live key count per namespace."""
    capacity_bytes: int | None = None
    """The engine's own size ceiling (LMDB map size), if it has one."""
    writes: int = 0
    """Batches written since open."""
    syncs: int = 0
    """Durable flushes (fsync or equivalent) since open."""


@runtime_checkable
class StorageSnapshot(Protocol):
    """A consistent, read-only, point-in-time view of an engine. Close it when done."""

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """The value of ``key`` as of the snapshot, or None."""
        ...

    def scan(
        self,
        namespace: str,
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` in ``[start, end)`` as of the snapshot."""
        ...

    def close(self) -> None:
        """Release the snapshot's resources. Idempotent."""
        ...

    def __enter__(self) -> StorageSnapshot: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class StorageEngine(Protocol):
    """A node's storage engine: namespaces, atomic batches, scans, snapshots, durability."""

    @property
    def backend(self) -> str:
        """The backend name that selected this engine ("lmdb", "rocksdb", "memory")."""
        ...

    @property
    def max_key_bytes(self) -> int:
        """The longest key this engine stores (LMDB: 511 bytes; others: MAX_KEY_BYTES).

        Layers above that prefix keys must keep the client-facing limit below this.
        """
        ...

    def create_namespace(self, name: str) -> None:
        """Create ``name`` if it does not exist. Idempotent and durable."""
        ...

    def namespaces(self) -> list[str]:
        """Names of the existing namespaces, sorted."""
        ...

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """The current value of ``key``, or None. Unknown namespace: InvalidRequest."""
        ...

    def scan(
        self,
        namespace: str,
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Iterate ``(key, value)`` with ``start <= key < end`` in byte order.

        ``None`` bounds are open. ``reverse`` walks from the highest key down. The
        iterator reads a consistent view; writes made while it runs may or may not show.
        """
        ...

    def write(self, batch: WriteBatch, *, sync: bool | None = None) -> None:
        """Apply ``batch`` atomically. ``sync=True``: durable on return.

        ``None`` uses the engine's configured default (``[storage] sync``).
        """
        ...

    def sync(self) -> None:
        """Make everything written so far durable."""
        ...

    def snapshot(self) -> StorageSnapshot:
        """A point-in-time read view."""
        ...

    def stats(self) -> StorageStats:
        """Size and usage figures."""
        ...

    def close(self) -> None:
        """Flush and release the engine. Idempotent; later calls raise StorageClosed."""
        ...
