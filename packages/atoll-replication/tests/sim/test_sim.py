"""Seeded fault schedules on a simulated Raft cluster, safety checked at every step.

Each seed runs random partitions, message loss, duplication and reordering, crashes and
restarts, leadership transfers and membership changes (with joint consensus) while
clients propose and read; then heals everything and checks liveness. A failure prints
its seed and the command that replays it.
"""

from __future__ import annotations

import pytest
from raft_sim_cluster import SimCluster

from atoll.testing import LinkFaults

REPLAY = "uv run pytest packages/atoll-replication/tests/sim --sim-seed {seed}"


def _run(seed: int, duration: float, **kw: object) -> SimCluster:
    c = SimCluster(seed, **kw)  # type: ignore[arg-type]
    try:
        rng = c.rng
        c.message_faults(
            LinkFaults(
                drop=rng.choice([0.0, 0.02, 0.1]),
                duplicate=rng.choice([0.0, 0.05]),
                reorder=rng.choice([0.0, 0.1]),
                reorder_delay=0.02,
            )
        )
        c.run_chaos(duration)
        c.heal_all()
        c.check_liveness()
    except AssertionError as exc:
        trace = "\n".join(c.log)
        raise AssertionError(
            f"{exc}\n--- last events ---\n{trace}\n"
            f"seed={seed}; replay with: {REPLAY.format(seed=seed)}"
        ) from exc
    return c


def test_random_schedule(sim_seed: int, sim_duration: float) -> None:
    c = _run(sim_seed, sim_duration)
    assert c.checker.max_applied > 0


@pytest.mark.parametrize("pre_vote", [True, False])
def test_five_voters_without_pre_vote_variants(pre_vote: bool, sim_duration: float) -> None:
    c = _run(1000 + int(pre_vote), sim_duration, voters=5, spares=1, pre_vote=pre_vote)
    assert c.checker.max_applied > 0
