"""The transmit-limited broadcast queue."""

from __future__ import annotations

from atoll.membership import BroadcastQueue, Dead, Suspect, retransmit_limit


def test_retransmit_limit_grows_with_log_cluster_size() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 500) == 12
    assert retransmit_limit(3, 5000) == 12


def test_each_update_is_sent_exactly_the_limit_then_dropped() -> None:
    q = BroadcastQueue(retransmit_mult=2)
    q.push(Suspect("a", 1, "x"))
    sent = 0
    while q.take(1400, cluster_size=5):
        sent += 1
    assert sent == 2 and len(q) == 0


def test_a_newer_update_about_the_same_node_replaces_the_old() -> None:
    done: list[str] = []
    q = BroadcastQueue(4)
    q.push(Suspect("a", 1, "x"), on_done=lambda: done.append("old"))
    q.push(Dead("a", 1, "x"))
    assert len(q) == 1 and isinstance(q.pending("a"), Dead)
    assert done == ["old"]


def test_least_transmitted_first_and_budget_respected() -> None:
    q = BroadcastQueue(10)
    q.push(Suspect("a", 1, "x"))
    assert [u.node_id for u in q.take(1400, 100)] == ["a"]
    q.push(Suspect("b", 1, "x"))
    q.push(Suspect("c", 1, "x"))
    size = Suspect("c", 1, "x").size + 1
    # Room for exactly two: the fresh ones (newest first) beat the retransmission of "a".
    assert [u.node_id for u in q.take(2 * size, 100)] == ["c", "b"]
    q.push(Suspect("d", 1, "x"))
    assert [u.node_id for u in q.take(size, 100)] == ["d"]  # never sent beats sent once
    assert [u.node_id for u in q.take(size, 100)] == ["d"]  # then newest among equals
    assert q.take(5, 100) == []


def test_on_done_fires_after_the_last_transmission() -> None:
    done: list[bool] = []
    q = BroadcastQueue(1)
    q.push(Dead("me", 0, "me"), on_done=lambda: done.append(True))
    assert not done
    q.take(1400, 3)
    assert done == [True]


def test_depth_is_bounded() -> None:
    q = BroadcastQueue(4, max_depth=3)
    for i in range(5):
        q.push(Suspect(f"n{i}", 1, "x"))
    assert len(q) == 3 and q.dropped == 2
