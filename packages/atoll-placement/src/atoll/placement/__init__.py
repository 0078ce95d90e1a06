"""Placement engine: key to partition, partition to replicas, rack/zone awareness, rules."""

__version__ = "0.1.0"
