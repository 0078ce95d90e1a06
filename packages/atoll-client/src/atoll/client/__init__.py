"""The Atoll client library (async and sync), routing cache and retries."""

__version__ = "0.1.0"
