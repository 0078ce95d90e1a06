"""What the request router needs from the Raft host: typing protocols only.

Owns: :class:`Pending`, :class:`ReplicaGroup`, :class:`GroupHost` (implemented by
``atoll.replication``'s host and by test doubles).
Never: holds behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from atoll.core import Frame, Timeout

__all__ = ["Finish", "GroupHost", "Pending", "ReplicaGroup"]


class Pending(Protocol):
    """A started proposal or read barrier: ``future`` completes when ``done`` is set and
    ``result`` or ``error`` holds the outcome."""

    future: asyncio.Future[None]
    done: bool
    result: Any
    error: Exception | None

    def abandon(self) -> None:
        """Withdraw the operation (its caller stopped waiting)."""
        ...

    def timeout_error(self, timeout: float) -> Timeout:
        """The error for a caller that waited ``timeout`` seconds in vain."""
        ...


Finish = Callable[[Any], Frame]
"""Turns a completed operation's result into its reply frame."""


class ReplicaGroup(Protocol):
    """The Raft group of one partition, as the router needs it."""

    @property
    def group_id(self) -> int:
        """The group id."""
        ...

    @property
    def is_leader(self) -> bool:
        """Whether this node currently leads the group."""
        ...

    @property
    def leader_id(self) -> str | None:
        """The leader this node knows of, if any."""
        ...

    def start_proposal(self, data: bytes) -> Pending:
        """Replicate ``data``; the result is the state machine's once applied here.
        Raises NotLeader (or the host's degradation error) at once."""
        ...

    def start_read(self) -> Pending | None:
        """Start a linearizable read barrier; None if the local state may be read now."""
        ...

    def wake(self) -> None:
        """Wake the group if it sleeps (quiescence), so a lost leader gets replaced."""
        ...


class GroupHost(Protocol):
    """Finds the replica groups hosted on this node."""

    def group(self, group_id: int) -> ReplicaGroup | None:
        """The local replica of ``group_id``, or None if this node hosts none."""
        ...
