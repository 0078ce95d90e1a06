"""Rebalancer (plans) and migrator (throttled, resumable, validated moves)."""

__version__ = "0.1.0"
