"""Whole-cluster behaviour in deterministic simulation (virtual time, seeded)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from atoll.core import MemberState

MODES = ["swim", "swim+lifeguard", "phi"]


@pytest.mark.parametrize("mode", MODES)
def test_a_crashed_node_is_declared_dead_by_everyone(mode: str, sim: Callable[..., Any]) -> None:
    sched, _net, cluster, ids, events = sim(8, mode)
    sched.run_for(5)
    cluster.crash("n3")
    others = [i for i in ids if i != "n3"]
    ok = sched.run_until_true(
        lambda: all(cluster.view(o, "n3").state is MemberState.DEAD for o in others),  # type: ignore[union-attr]
        timeout=90,
    )
    assert ok
    dead = [(obs, ev.member.node_id) for _t, obs, ev in events if ev.kind == "dead"]
    assert {s for _o, s in dead} == {"n3"}  # nobody else was falsely declared dead
    if mode != "phi":
        assert any(ev.kind == "suspect" for _t, _o, ev in events)


@pytest.mark.parametrize("mode", ["swim", "swim+lifeguard"])
def test_dead_members_are_removed_after_reclaim(mode: str, sim: Callable[..., Any]) -> None:
    sched, _net, cluster, ids, events = sim(5, mode, dead_reclaim=10.0)
    cluster.crash("n4")
    sched.run_for(60)
    assert all(cluster.view(o, "n4") is None for o in ids[:4])
    assert {obs for _t, obs, ev in events if ev.kind == "removed"} == set(ids[:4])


@pytest.mark.parametrize("mode", MODES)
def test_join_through_a_seed_reaches_everyone(mode: str, sim: Callable[..., Any]) -> None:
    sched, _net, cluster, ids, _events = sim(10, mode)
    sched.run_for(2)
    cluster.add_node("new", zone="z9")
    cluster.join("new", ["nowhere", "n5"])  # one dead seed is fine: any live seed will do
    ok = sched.run_until_true(
        lambda: (
            all(cluster.view(o, "new") is not None for o in ids)
            and len(cluster.nodes["new"].core.members()) == 11
        ),
        timeout=30,
    )
    assert ok
    assert cluster.view("n0", "new").zone == "z9"  # type: ignore[union-attr]
    assert cluster.nodes["new"].core.joined


def test_join_retries_with_backoff_until_a_seed_appears(sim: Callable[..., Any]) -> None:
    sched, net, cluster, _ids, _events = sim(3, "swim+lifeguard", join_max_attempts=0)
    cluster.add_node("late")
    net.unregister("n0")  # the seed is not reachable yet
    cluster.join("late", ["n0"])
    sched.run_for(20)
    core = cluster.nodes["late"].core
    assert not core.joined
    attempts = core._join_attempts
    assert 3 <= attempts <= 6  # 2 s, 4 s, 8 s ... not one per tick
    net.register("n0", lambda src, msg: cluster._deliver(cluster.nodes["n0"], src, msg))
    assert sched.run_until_true(lambda: core.joined, timeout=60)


def test_join_gives_up_after_max_attempts(sim: Callable[..., Any]) -> None:
    sched, _net, cluster, _ids, _events = sim(2, join_max_attempts=3)
    cluster.add_node("lonely")
    cluster.join("lonely", ["nowhere"])
    sched.run_for(120)
    assert cluster.nodes["lonely"].core.join_failed


@pytest.mark.parametrize("mode", MODES)
def test_graceful_leave_is_known_before_the_process_exits(
    mode: str, sim: Callable[..., Any]
) -> None:
    sched, _net, cluster, ids, events = sim(10, mode)
    sched.run_for(3)
    cluster.leave("n7")
    sched.run_for(0.5)  # the shell's leave() waits about this long before exiting
    cluster.crash("n7")
    sched.run_for(5)
    for o in ids:
        if o != "n7":
            assert cluster.view(o, "n7").state is MemberState.LEFT  # type: ignore[union-attr]
    assert not any(ev.kind == "dead" for _t, _o, ev in events)


def test_metadata_update_spreads_and_bumps_the_incarnation(sim: Callable[..., Any]) -> None:
    sched, _net, cluster, ids, events = sim(10)
    sched.run_for(2)
    core = cluster.nodes["n2"].core
    info = core.update_metadata(sched.now(), tags={"role": "hot"}, meta_epoch=7)
    assert info.incarnation == 1
    ok = sched.run_until_true(
        lambda: all(cluster.view(o, "n2").tags == {"role": "hot"} for o in ids),  # type: ignore[union-attr]
        timeout=10,
    )
    assert ok
    assert cluster.view("n9", "n2").meta_epoch == 7  # type: ignore[union-attr]
    assert sum(1 for _t, _o, ev in events if ev.kind == "updated") == 10
    with pytest.raises(ValueError, match="node_id"):
        core.update_metadata(sched.now(), node_id="x")


@pytest.mark.parametrize("mode", ["swim", "swim+lifeguard"])
def test_false_suspicion_is_refuted_with_a_higher_incarnation(
    mode: str, sim: Callable[..., Any]
) -> None:
    sched, net, cluster, ids, events = sim(6, mode)
    sched.run_for(2)
    # Cut n5 off just long enough to be suspected, not long enough to be declared dead.
    net.isolate("n5")
    assert sched.run_until_true(
        lambda: any(ev.kind == "suspect" and ev.member.node_id == "n5" for _t, _o, ev in events),
        timeout=20,
    )
    net.heal()
    sched.run_for(30)
    assert cluster.nodes["n5"].core.local.incarnation >= 1
    assert cluster.nodes["n5"].core.stats.refutations >= 1
    assert all(cluster.view(o, "n5").state is MemberState.ALIVE for o in ids)  # type: ignore[union-attr]
    if mode == "swim+lifeguard":
        # The buddy system tells n5 directly on the next probe, long before any timeout;
        # plain SWIM relies on gossip that was lost while n5 was cut off, and here it
        # declares n5 dead before n5 hears and refutes.
        assert not any(ev.kind == "dead" for _t, _o, ev in events)
    assert sum(cluster.nodes[o].core.stats.suspicions_refuted for o in ids) >= 1


@pytest.mark.parametrize("mode", MODES)
def test_partition_heals_and_everyone_converges(mode: str, sim: Callable[..., Any]) -> None:
    sched, net, cluster, ids, _events = sim(8, mode, push_pull_interval=10.0)
    sched.run_for(2)
    net.partition([ids[:4], ids[4:]])
    sched.run_for(60)  # long enough for each side to declare the other dead and reap it
    assert cluster.view("n0", "n7") is None
    net.heal()
    ok = sched.run_until_true(
        lambda: all(
            (v := cluster.view(o, s)) is not None and v.state is MemberState.ALIVE
            for o in ids
            for s in ids
        ),
        timeout=120,
    )
    assert ok


def _stall_mid_probe(make_sim: Callable[..., Any], mode: str) -> tuple[int, int]:
    """Stall n0 right after it sends a probe, for 2x the probe timeout; return
    (suspicions n0 raised, probes it judged inconclusive)."""
    sched, _net, cluster, _ids, _events = make_sim(5, mode)
    core = cluster.nodes["n0"].core
    sched.run_until_true(lambda: core._probe is not None, timeout=5)
    cluster.stall("n0", 2 * cluster.config.detection.probe_timeout)
    sched.run_for(3)
    return core.stats.suspicions_raised, core.stats.probes_inconclusive


def test_a_stalled_node_blames_its_probe_target_under_plain_swim(sim: Callable[..., Any]) -> None:
    raised, inconclusive = _stall_mid_probe(sim, "swim")
    assert raised == 1 and inconclusive == 0


def test_lifeguard_knows_it_was_the_stalled_one(sim: Callable[..., Any]) -> None:
    raised, inconclusive = _stall_mid_probe(sim, "swim+lifeguard")
    assert raised == 0 and inconclusive == 1


def test_lifeguard_buddy_system_tells_the_suspect_directly(sim: Callable[..., Any]) -> None:
    sched, _net, cluster, _ids, _events = sim(4, "swim+lifeguard", gossip_nodes=0)
    sched.run_for(1)
    core = cluster.nodes["n0"].core
    core.receive("n1", _suspect_msg("n3"), sched.now())  # n0 now suspects n3
    cluster._flush(cluster.nodes["n0"])
    assert core.member("n3").state is MemberState.SUSPECT  # type: ignore[union-attr]
    sched.run_for(10)
    assert cluster.nodes["n3"].core.stats.refutations >= 1
    assert core.member("n3").state is MemberState.ALIVE  # type: ignore[union-attr]


def _suspect_msg(target: str):  # type: ignore[no-untyped-def]
    from atoll.membership import Gossip, Suspect

    return Gossip("n1", (Suspect(target, 0, "n1"),))


def test_simulation_replays_exactly_from_its_seed(sim: Callable[..., Any]) -> None:
    def trace(seed: int) -> list[tuple[float, str, str, str]]:
        sched, _net, cluster, _ids, events = sim(12, "swim+lifeguard", seed=seed, drop=0.1)
        cluster.crash("n4")
        sched.run_for(30)
        return [(t, o, ev.kind, ev.member.node_id) for t, o, ev in events]

    a, b = trace(7), trace(7)
    assert a == b and a
    assert trace(8) != a


def test_lifeguard_has_no_false_deads_at_5_percent_loss(sim: Callable[..., Any]) -> None:
    sched, _net, cluster, ids, events = sim(10, "swim+lifeguard", drop=0.05)
    sched.run_for(300)
    assert not [ev for _t, _o, ev in events if ev.kind == "dead"]
    assert all(cluster.view(o, s).state is not MemberState.DEAD for o in ids for s in ids)  # type: ignore[union-attr]


def _suspect_then_stall(make_sim: Callable[..., Any], mode: str) -> tuple[list[str], Any]:
    """n0 and n3 hear that n3 is suspected; n3 refutes at once, but n0 freezes right
    away for longer than its suspicion timeout, so the refutation waits in n0's backlog
    while the deadline passes. Return (members n0 declared dead, n0's final view of n3)."""
    sched, _net, cluster, _ids, events = make_sim(5, mode)
    sched.run_for(1)
    for nid in ("n0", "n3"):
        cluster.nodes[nid].core.receive("n1", _suspect_msg("n3"), sched.now())
        cluster._flush(cluster.nodes[nid])
    assert cluster.view("n0", "n3").state is MemberState.SUSPECT  # type: ignore[union-attr]
    suspicion = cluster.nodes["n0"].core._members["n3"].suspicion
    cluster.stall("n0", suspicion.deadline - sched.now() + 1.0)
    sched.run_for(suspicion.deadline - sched.now() + 5.0)
    dead = [ev.member.node_id for _t, obs, ev in events if obs == "n0" and ev.kind == "dead"]
    return dead, cluster.view("n0", "n3")


def test_plain_swim_declares_dead_a_member_whose_refutation_it_had_not_read(
    sim: Callable[..., Any],
) -> None:
    dead, _view = _suspect_then_stall(sim, "swim")
    assert dead == ["n3"]


def test_lifeguard_reads_its_backlog_before_judging_after_a_stall(
    sim: Callable[..., Any],
) -> None:
    dead, view = _suspect_then_stall(sim, "swim+lifeguard")
    assert dead == []
    assert view.state is MemberState.ALIVE and view.incarnation >= 1


def test_slow_inbound_holds_messages_while_timers_run(sim: Callable[..., Any]) -> None:
    sched, _net, cluster, _ids, _events = sim(5, "swim")
    sched.run_for(2)
    node = cluster.nodes["n0"]
    probes = node.core.stats.probes_sent
    received = node.core.stats.messages_received
    cluster.slow_inbound("n0", 3.0)
    sched.run_for(2.5)
    assert node.core.stats.probes_sent > probes  # its timers kept firing
    assert node.core.stats.messages_received == received  # nothing was read
    assert node.backlog
    sched.run_for(1.0)
    assert not node.backlog
    assert node.core.stats.messages_received > received
