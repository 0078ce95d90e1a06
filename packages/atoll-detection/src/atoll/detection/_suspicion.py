"""Lifeguard's dynamic suspicion timeout: it starts long and shrinks with confirmations.

Owns: one suspicion of one node: its start, its bounds, the independent confirmations
that arrived, and the resulting deadline (hashicorp/memberlist ``suspicion.go``;
Lifeguard paper section 4.2). Also :func:`suspicion_timeout`, the classic SWIM timeout
that scales with ``log10`` of the cluster size.
Never: arms timers or reads the clock; the caller asks for :attr:`deadline` after each
change and (re)arms its own timer.
"""

from __future__ import annotations

import math

__all__ = ["Suspicion", "suspicion_timeout"]


def suspicion_timeout(mult: float, cluster_size: int, interval: float) -> float:
    """Classic SWIM suspicion timeout: ``mult * max(1, log10(n)) * interval``."""
    node_scale = max(1.0, math.log10(max(1, cluster_size)))
    return mult * node_scale * interval


class Suspicion:
    """One suspicion: deadline ``max_timeout`` at first, ``min_timeout`` after ``k`` confirmations.

    With ``c`` confirmations the timeout is
    ``max(min, max - (max - min) * log(c + 1) / log(k + 1))``, measured from
    :attr:`start`. Plain SWIM is the special case ``k = 0`` (or ``min == max``): a fixed
    timeout that confirmations do not change.

    :param suspector: the node whose report started the suspicion; it is not counted as
        a confirmation.
    """

    __slots__ = (
        "_confirmed",
        "deferrals",
        "k",
        "max_timeout",
        "min_timeout",
        "not_before",
        "start",
    )

    def __init__(
        self, start: float, min_timeout: float, max_timeout: float, k: int, suspector: str
    ) -> None:
        if min_timeout <= 0 or max_timeout < min_timeout:
            raise ValueError(
                f"need 0 < min_timeout <= max_timeout, got {min_timeout} and {max_timeout}"
            )
        self.start = start
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.k = max(0, k)
        self._confirmed: set[str] = {suspector}
        self.not_before = start
        """No verdict before this moment (see :meth:`defer`)."""
        self.deferrals = 0
        """How many times :meth:`defer` pushed the deadline back."""

    @property
    def confirmations(self) -> int:
        """Independent confirmations so far (the original suspector excluded)."""
        return len(self._confirmed) - 1

    def confirm(self, from_node: str) -> bool:
        """Count ``from_node`` as confirming; True if it was new and shortened the deadline."""
        if self.k < 1 or self.confirmations >= self.k or from_node in self._confirmed:
            return False
        self._confirmed.add(from_node)
        return True

    def timeout(self) -> float:
        """The current timeout, given the confirmations received."""
        if self.k < 1:
            return self.min_timeout
        frac = math.log(self.confirmations + 1) / math.log(self.k + 1)
        span = self.max_timeout - self.min_timeout
        return max(self.min_timeout, self.max_timeout - frac * span)

    def defer(self, until: float) -> None:
        """Hold the verdict until ``until`` at least (Lifeguard: the suspecting node itself
        stalled past the deadline, and the refutation may be waiting in its backlog)."""
        self.deferrals += 1
        self.not_before = max(self.not_before, until)

    @property
    def deadline(self) -> float:
        """The moment the suspected node should be declared dead if nothing refutes it."""
        return max(self.start + self.timeout(), self.not_before)
