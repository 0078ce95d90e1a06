"""Node-to-node transport plugin over a NATS server (nats-py)."""

__version__ = "0.1.0"
