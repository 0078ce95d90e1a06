"""Metrics registry, health and readiness probes, the /metrics endpoint."""

__version__ = "0.1.0"
