"""Failure detectors: SWIM probes with Lifeguard, and phi accrual."""

__version__ = "0.1.0"
