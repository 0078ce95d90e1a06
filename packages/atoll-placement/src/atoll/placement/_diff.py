"""The difference between two placement tables, as steps the rebalancer can execute.

Owns: :func:`table_diff` and the order of its steps: per partition, every add comes
before the leader transfer, which comes before every remove, so a partition never has
fewer replicas than before the move began and never loses its leader to a removal.
Never: decides where replicas go (``_core.py`` does) or executes anything.
"""

from __future__ import annotations

from ._errors import PlacementError
from ._model import MoveKind, PlacementTable, ReplicaMove

__all__ = ["table_diff"]


def table_diff(old: PlacementTable, new: PlacementTable) -> list[ReplicaMove]:
    """The steps that turn ``old`` into ``new``, partition by partition.

    For each partition (ascending): ``ADD_REPLICA`` for each node only in ``new`` (in
    ``new``'s order), then ``TRANSFER_LEADER`` if the leader changed, then
    ``REMOVE_REPLICA`` for each node only in ``old``. Adding first keeps the partition at
    or above its replication factor throughout; transferring before removing means the
    old leader is never removed while it leads, unless ``new`` leaves the partition no
    replica at all (no eligible node is left). Partitions with no change produce nothing.
    """
    if old.keyspace != new.keyspace:
        raise PlacementError(f"cannot diff keyspace {old.keyspace!r} against {new.keyspace!r}")
    if old.partitions != new.partitions:
        raise PlacementError(
            f"cannot diff {old.partitions} partitions against {new.partitions} "
            f"(keyspace {old.keyspace!r}); a keyspace's partition count is fixed"
        )
    moves: list[ReplicaMove] = []
    ks = new.keyspace
    for p, (before, after) in enumerate(zip(old.replicas, new.replicas, strict=True)):
        was, now = set(before), set(after)
        for node in after:
            if node not in was:
                moves.append(ReplicaMove(ks, p, MoveKind.ADD_REPLICA, node))
        old_leader = before[0] if before else None
        new_leader = after[0] if after else None
        if new_leader is not None and new_leader != old_leader:
            moves.append(ReplicaMove(ks, p, MoveKind.TRANSFER_LEADER, new_leader, old_leader))
        for node in before:
            if node not in now:
                moves.append(ReplicaMove(ks, p, MoveKind.REMOVE_REPLICA, node))
    return moves
