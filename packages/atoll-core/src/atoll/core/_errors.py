"""The Atoll error taxonomy: every error a node or client can see, and its wire form.

Owns: the exception classes and their conversion to and from a frame header.
Never: imports IO modules, or lets a non-Atoll exception cross the wire.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AtollError",
    "ConfigError",
    "CorruptData",
    "DiskFull",
    "FrameError",
    "FrameTooLarge",
    "InvalidRequest",
    "NotLeader",
    "PeerUnreachable",
    "PluginError",
    "StaleEpoch",
    "StorageClosed",
    "StorageError",
    "Timeout",
    "TransportClosed",
    "TransportError",
    "Unavailable",
    "UnsupportedVersion",
    "error_from_wire",
    "error_to_wire",
]


class AtollError(Exception):
    """Base class of every error Atoll raises on purpose.

    ``code`` is the stable name used on the wire; ``retryable`` tells a client whether
    trying again (possibly elsewhere) can succeed.
    """

    code: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details: dict[str, Any] = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigError(AtollError):
    """A configuration file, key or value is wrong; the message names which and why."""

    code = "config"


class PluginError(AtollError):
    """A plugin is missing, misspelled or implements a hook that has no specification."""

    code = "plugin"


class InvalidRequest(AtollError):
    """The request itself is malformed (empty key, oversized value, wrong type ...)."""

    code = "invalid_request"


class NotLeader(AtollError):
    """This node does not lead the group; ``leader_hint`` names the node that may."""

    code = "not_leader"
    retryable = True

    def __init__(
        self, message: str = "", *, leader_hint: str | None = None, **details: Any
    ) -> None:
        super().__init__(message or "not the leader", leader_hint=leader_hint, **details)
        self.leader_hint = leader_hint


class StaleEpoch(AtollError):
    """The caller's cluster map is older than this node's; refresh it and retry."""

    code = "stale_epoch"
    retryable = True

    def __init__(self, message: str = "", *, epoch: int = 0, **details: Any) -> None:
        super().__init__(message or f"stale epoch (current {epoch})", epoch=epoch, **details)
        self.epoch = epoch


class Unavailable(AtollError):
    """The operation cannot be served now (no quorum, shutting down ...); retry later."""

    code = "unavailable"
    retryable = True


class Timeout(AtollError):
    """The operation did not finish before its deadline; its outcome is unknown."""

    code = "timeout"
    retryable = True


class StorageError(AtollError):
    """The storage engine failed; the message says which engine, file and operation."""

    code = "storage"


class DiskFull(StorageError):
    """A write failed because the disk (or the engine's map size) is full."""

    code = "disk_full"


class CorruptData(StorageError):
    """Stored data failed a check (bad magic, checksum, undecodable record)."""

    code = "corrupt"


class StorageClosed(StorageError):
    """The engine was used after ``close()``."""

    code = "storage_closed"


class TransportError(AtollError):
    """A transport-level failure (connection refused, reset, protocol violation)."""

    code = "transport"
    retryable = True


class PeerUnreachable(TransportError):
    """No connection to the named peer could be made."""

    code = "peer_unreachable"


class TransportClosed(TransportError):
    """The transport was used after ``close()``."""

    code = "transport_closed"
    retryable = False


class FrameError(AtollError):
    """A frame could not be decoded: the bytes are not an Atoll frame."""

    code = "bad_frame"


class FrameTooLarge(FrameError):
    """A frame declared a length above the configured maximum."""

    code = "frame_too_large"


class UnsupportedVersion(FrameError):
    """A frame carries a protocol version this node cannot read."""

    code = "unsupported_version"


_BY_CODE: dict[str, type[AtollError]] = {}


def _index(cls: type[AtollError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _index(sub)


_index(AtollError)


def error_to_wire(exc: AtollError) -> dict[str, Any]:
    """Return the JSON-safe header form of ``exc`` (code, message, details)."""
    return {"code": exc.code, "message": exc.message, "details": exc.details}


def error_from_wire(doc: dict[str, Any]) -> AtollError:
    """Rebuild the exception that :func:`error_to_wire` encoded.

    An unknown code becomes a plain :class:`AtollError` carrying that code's message,
    so a newer peer's error is still reported rather than crashing the reader.
    """
    code = str(doc.get("code", "error"))
    message = str(doc.get("message", code))
    details = doc.get("details") or {}
    if not isinstance(details, dict):
        details = {}
    cls = _BY_CODE.get(code, AtollError)
    try:
        return cls(message, **details)
    except TypeError:
        err = AtollError(message, **details)
        return err
