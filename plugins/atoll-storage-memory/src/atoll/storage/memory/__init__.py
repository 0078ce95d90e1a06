"""In-memory storage engine plugin for tests and simulation."""

__version__ = "0.1.0"
