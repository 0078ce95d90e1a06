"""The composition root: config to plugins to a running node; the local cluster launcher."""

__version__ = "0.1.0"
