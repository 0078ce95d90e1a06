"""The placement engine's errors.

Owns: :class:`PlacementError` (a placement cannot be satisfied) and
:class:`PlacementRuleError` (a keyspace spec or rule is malformed).
Never: imports IO modules; both are plain :class:`atoll.core.InvalidRequest` subclasses so
they travel on the wire like any other Atoll error.
"""

from __future__ import annotations

from atoll.core import InvalidRequest

__all__ = ["PlacementError", "PlacementRuleError"]


class PlacementError(InvalidRequest):
    """No placement satisfies the keyspace's replication factor and rules.

    The message says how many nodes or failure domains were eligible and how many were
    needed; ``details`` carries the same figures (``eligible``, ``needed``, and where it
    applies ``keyspace``, ``partition``, ``level``, ``rule``) for programs.
    """

    code = "placement"


class PlacementRuleError(PlacementError):
    """A keyspace spec or placement rule is malformed; the message names the bad rule.

    Raised before any placement is attempted, whatever the strictness: a rule that cannot
    mean anything is an operator error, not a best-effort situation.
    """

    code = "placement_rule"
