"""The election timer: logical ticks, a randomized timeout, and election priority.

Owns: counting ticks since a node last heard from a leader (or started campaigning), and
drawing each randomized timeout from an injected RNG (Raft 5.2: the randomization is what
breaks split votes). Election priority lengthens the range of nodes that some voter
outranks, so placement's preferred replicas almost always campaign first.
Never: reads a clock or the global ``random`` module; ticks are the only time it knows.
"""

from __future__ import annotations

from atoll.core import Rng

__all__ = ["ElectionTimer"]


class ElectionTimer:
    """Counts ticks against a timeout drawn uniformly from ``[base, 2 * base)``.

    ``handicap`` extra ranges of ``base`` ticks are added for a node that a higher-priority
    voter outranks: with ``handicap=1`` it draws from ``[2 * base, 3 * base)``.
    """

    __slots__ = ("_handicap", "_rng", "_timeout", "base", "elapsed")

    def __init__(self, base: int, rng: Rng, *, handicap: int = 0) -> None:
        if base < 1:
            raise ValueError(f"election timeout must be at least 1 tick, got {base}")
        if handicap < 0:
            raise ValueError(f"election handicap must be >= 0, got {handicap}")
        self.base = base
        self.elapsed = 0
        self._rng = rng
        self._handicap = handicap
        self._timeout = base
        self.randomize()

    @property
    def timeout(self) -> int:
        """The current randomized timeout in ticks."""
        return self._timeout

    @property
    def handicap(self) -> int:
        """How many extra ``base`` ranges this node waits (0 for top-priority nodes)."""
        return self._handicap

    def set_handicap(self, handicap: int) -> None:
        """Change the priority handicap; takes effect at the next :meth:`reset`."""
        if handicap < 0:
            raise ValueError(f"election handicap must be >= 0, got {handicap}")
        self._handicap = handicap

    def randomize(self) -> None:
        """Draw a new timeout without touching the elapsed count."""
        lo = self.base * (1 + self._handicap)
        self._timeout = lo + self._rng.randrange(self.base)

    def reset(self) -> None:
        """Start counting from zero with a freshly drawn timeout."""
        self.elapsed = 0
        self.randomize()

    def tick(self) -> bool:
        """Advance one tick; True once the randomized timeout has elapsed."""
        self.elapsed += 1
        return self.elapsed >= self._timeout

    @property
    def past_base(self) -> bool:
        """Whether at least one un-randomized election timeout has elapsed."""
        return self.elapsed >= self.base
