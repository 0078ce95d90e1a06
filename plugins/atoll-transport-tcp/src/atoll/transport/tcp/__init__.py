"""Node-to-node and client transport plugin on TCP (anyio streams)."""

__version__ = "0.1.0"
