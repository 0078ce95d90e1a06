"""Options of the deterministic Raft simulation.

``--sim-seeds N`` runs seeds ``0 .. N-1`` (default 8); ``--sim-seed S`` replays one seed;
``--sim-first F`` shifts the range (``F .. F+N-1``) so CI can sweep new seeds nightly;
``--sim-duration D`` sets the virtual seconds of faults per schedule (default 4).
"""

from __future__ import annotations

import pathlib
import sys

import pytest

for _d in (pathlib.Path(__file__).parent, pathlib.Path(__file__).parent.parent):
    if str(_d) not in sys.path:
        sys.path.insert(0, str(_d))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" in metafunc.fixturenames:
        one = metafunc.config.getoption("--sim-seed")
        if one is not None:
            seeds = [one]
        else:
            first = metafunc.config.getoption("--sim-first")
            seeds = list(range(first, first + metafunc.config.getoption("--sim-seeds")))
        metafunc.parametrize("sim_seed", seeds, ids=[f"seed{s}" for s in seeds])


@pytest.fixture
def sim_duration(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--sim-duration"))
