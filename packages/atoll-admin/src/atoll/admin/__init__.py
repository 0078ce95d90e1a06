"""Admin API, the atoll CLI and the Textual TUI."""

__version__ = "0.1.0"
