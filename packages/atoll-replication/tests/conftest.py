"""Test setup for atoll-replication: the shared Raft harness on sys.path, and the options
of the deterministic simulation (registered here so they work from any test path):
``--sim-seeds N``, ``--sim-first F``, ``--sim-seed S`` (replay), ``--sim-duration D``."""

from __future__ import annotations

import pathlib
import sys

import pytest

_HERE = str(pathlib.Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("atoll-raft-sim", "deterministic Raft simulation")
    group.addoption("--sim-seeds", type=int, default=25, help="number of seeded schedules")
    group.addoption("--sim-first", type=int, default=0, help="first seed of the range")
    group.addoption("--sim-seed", type=int, default=None, help="replay exactly this seed")
    group.addoption(
        "--sim-duration", type=float, default=4.0, help="virtual seconds of faults per seed"
    )
