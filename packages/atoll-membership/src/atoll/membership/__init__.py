"""SWIM gossip membership: join, leave, dissemination, incarnations, anti-entropy."""

__version__ = "0.1.0"
