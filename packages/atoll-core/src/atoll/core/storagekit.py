"""Argument checks shared by every storage engine backend (memory, LMDB, RocksDB).

A toolkit for storage implementers, so every backend refuses the same bad input with the
same :class:`atoll.core.InvalidRequest` message.
Owns: key, scan-argument and batch validation.
Never: touches engine state.
"""

from __future__ import annotations

from collections.abc import Container

from ._errors import InvalidRequest
from ._storage import MAX_KEY_BYTES, OP_DELETE, OP_DELETE_RANGE, OP_PUT, WriteBatch

__all__ = [
    "OP_DELETE",
    "OP_DELETE_RANGE",
    "OP_PUT",
    "Op",
    "check_batch",
    "check_key",
    "check_scan_args",
]

Op = tuple[int, str, bytes, bytes]


def check_key(key: object, max_key_bytes: int = MAX_KEY_BYTES) -> bytes:
    """Return ``key`` as bytes, or raise InvalidRequest (not bytes, empty, too long)."""
    if type(key) is bytes and 0 < len(key) <= max_key_bytes:
        return key  # the hot path: one type check, no copy
    if not isinstance(key, bytes | bytearray | memoryview):
        raise InvalidRequest(f"key must be bytes, not {type(key).__name__}")
    k = bytes(key)
    if not k:
        raise InvalidRequest("key must not be empty")
    if len(k) > max_key_bytes:
        raise InvalidRequest(f"key of {len(k)} bytes exceeds the {max_key_bytes}-byte limit")
    return k


def _bound(what: str, value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidRequest(f"scan {what} must be bytes or None, not {type(value).__name__}")
    return bytes(value)


def check_scan_args(
    start: object, end: object, limit: object
) -> tuple[bytes | None, bytes | None, int | None]:
    """Validate scan bounds and limit; an empty ``start`` means "from the first key"."""
    s = _bound("start", start) or None
    e = _bound("end", end)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidRequest(f"scan limit must be None or an integer >= 0, not {limit!r}")
    return s, e, limit


def check_batch(
    batch: object, namespaces: Container[str], max_key_bytes: int = MAX_KEY_BYTES
) -> list[Op]:
    """Validate every operation of ``batch`` before any is applied (all-or-nothing).

    ``WriteBatch`` checks its arguments when built, but ``ops`` is a public list (and
    ``extend`` merges batches), so the engine checks again: namespaces must exist, keys
    must be non-empty bytes within ``max_key_bytes``, values bytes.
    """
    if not isinstance(batch, WriteBatch):
        raise InvalidRequest(f"write() takes a WriteBatch, not {type(batch).__name__}")
    ops = list(batch.ops)
    for i, op in enumerate(ops):
        try:
            kind, ns, a, b = op
        except (TypeError, ValueError):
            raise InvalidRequest(f"batch operation {i} is malformed: {op!r}") from None
        if ns not in namespaces:
            raise InvalidRequest(
                f"batch operation {i}: namespace {ns!r} does not exist (create_namespace it first)"
            )
        if type(a) is not bytes or type(b) is not bytes:
            raise InvalidRequest(f"batch operation {i}: keys and values must be bytes")
        if kind == OP_DELETE_RANGE:
            if not b or a >= b:
                raise InvalidRequest(f"batch operation {i}: delete_range [{a!r}, {b!r}) is empty")
            continue
        if kind not in (OP_PUT, OP_DELETE):
            raise InvalidRequest(f"batch operation {i}: unknown operation code {kind!r}")
        if not a:
            raise InvalidRequest(f"batch operation {i}: key must not be empty")
        if len(a) > max_key_bytes:
            raise InvalidRequest(
                f"batch operation {i}: key of {len(a)} bytes exceeds this engine's "
                f"{max_key_bytes}-byte limit"
            )
    return ops
