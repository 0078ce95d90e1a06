"""Membership changes: single-voter changes and joint consensus (Raft thesis 4.3).

Owns: the pure function from (membership, change) to the next membership, with every
validity rule (one voter at a time unless joint; no entering a joint config twice; no
leaving one that is not joint; learners and voters disjoint), and the compact byte
encoding of a :class:`ConfChange` carried in a CONF_CHANGE log entry.
Never: looks at the log or decides when a change is allowed in time (one pending change
at a time is the node core's rule).
"""

from __future__ import annotations

import orjson

from atoll.core import InvalidRequest

from ._types import ConfChange, ConfChangeOp, ConfChangeType, ConfState

__all__ = ["apply_conf_change", "decode_conf_change", "encode_conf_change"]


def encode_conf_change(cc: ConfChange) -> bytes:
    """Encode ``cc`` as the payload of a CONF_CHANGE entry."""
    return orjson.dumps(
        {"o": [[int(op.type), op.node_id] for op in cc.ops], "j": cc.joint, "l": cc.leave_joint}
    )


def decode_conf_change(data: bytes) -> ConfChange:
    """Decode a CONF_CHANGE entry payload (raises :class:`InvalidRequest` if malformed)."""
    try:
        doc = orjson.loads(data)
        ops = tuple(ConfChangeOp(ConfChangeType(int(t)), str(n)) for t, n in doc["o"])
        return ConfChange(ops, bool(doc.get("j", False)), bool(doc.get("l", False)))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"undecodable membership change {data[:64]!r}: {exc}") from exc


def _voter_changes(state: ConfState, cc: ConfChange) -> int:
    changed = 0
    for op in cc.ops:
        is_voter = op.node_id in state.voters
        becomes_voter = op.type is ConfChangeType.ADD_VOTER
        if is_voter != becomes_voter:
            changed += 1
    return changed


def apply_conf_change(state: ConfState, cc: ConfChange) -> ConfState:
    """The membership after applying ``cc`` to ``state``.

    Raises :class:`InvalidRequest` naming the rule ``cc`` breaks.
    """
    if cc.leave_joint:
        if cc.ops:
            raise InvalidRequest("a leave-joint change must not carry operations")
        if not state.is_joint:
            raise InvalidRequest("cannot leave a joint configuration: none is in force")
        return ConfState(
            voters=state.voters,
            learners=state.learners | state.learners_next,
            auto_promote=state.auto_promote & (state.learners | state.learners_next),
        )
    if state.is_joint:
        raise InvalidRequest("a joint configuration is in force; leave it first")
    if not cc.ops:
        raise InvalidRequest("a membership change needs at least one operation")
    enter_joint = cc.joint or _voter_changes(state, cc) > 1
    voters = set(state.voters)
    learners = set(state.learners)
    learners_next: set[str] = set()
    auto_promote = set(state.auto_promote)
    outgoing = frozenset(state.voters) if enter_joint else frozenset()
    for op in cc.ops:
        node = op.node_id
        if not node:
            raise InvalidRequest("a membership change names an empty node id")
        if op.type is ConfChangeType.ADD_VOTER:
            voters.add(node)
            learners.discard(node)
            learners_next.discard(node)
            auto_promote.discard(node)
        elif op.type in (ConfChangeType.ADD_LEARNER, ConfChangeType.ADD_LEARNER_AUTO_PROMOTE):
            voters.discard(node)
            if node in outgoing:
                # Still votes in the outgoing half: becomes a learner on leaving joint.
                learners_next.add(node)
                learners.discard(node)
            else:
                learners.add(node)
            if op.type is ConfChangeType.ADD_LEARNER_AUTO_PROMOTE:
                auto_promote.add(node)
            else:
                auto_promote.discard(node)
        else:
            voters.discard(node)
            learners.discard(node)
            learners_next.discard(node)
            auto_promote.discard(node)
    if not voters:
        raise InvalidRequest("a membership change must leave at least one voter")
    return ConfState(
        voters=frozenset(voters),
        voters_outgoing=outgoing,
        learners=frozenset(learners),
        learners_next=frozenset(learners_next),
        auto_leave=enter_joint,
        auto_promote=frozenset(auto_promote),
    )
