"""The node's client-facing request router and read/write paths."""

__version__ = "0.1.0"
