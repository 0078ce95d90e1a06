"""In-process transport plugin over the simulated network."""

__version__ = "0.1.0"
