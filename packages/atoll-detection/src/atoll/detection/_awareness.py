"""Lifeguard's local health multiplier (LHM): how much this node distrusts itself.

Owns: the bounded health score and the timeout scaling derived from it
(hashicorp/memberlist ``awareness.go``; Lifeguard paper section 4.1).
Never: reads the clock, does IO, or decides anything about *other* nodes.

A score of 0 means healthy. Failed probes whose helpers sent no nacks, refuting a
suspicion about ourselves, and a lagging event loop raise it; successful probes lower
it. Every probe timeout and interval is multiplied by ``score + 1``, so a node that is
itself slow waits longer before it blames anyone else.
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """A health score in ``[0, max_multiplier - 1]``; higher means "probably me"."""

    __slots__ = ("_max", "_score")

    def __init__(self, max_multiplier: int = 8) -> None:
        if max_multiplier < 1:
            raise ValueError(f"max_multiplier = {max_multiplier} must be at least 1")
        self._max = max_multiplier
        self._score = 0

    @property
    def score(self) -> int:
        """The current score (0 = healthy)."""
        return self._score

    @property
    def max_multiplier(self) -> int:
        """The largest multiplier :meth:`scale` can apply."""
        return self._max

    def apply_delta(self, delta: int) -> int:
        """Add ``delta`` (may be negative), clamped to the bounds; return the change applied."""
        before = self._score
        self._score = min(self._max - 1, max(0, before + delta))
        return self._score - before

    def scale(self, timeout: float) -> float:
        """``timeout`` stretched by the current multiplier (``score + 1``)."""
        return timeout * (self._score + 1)
