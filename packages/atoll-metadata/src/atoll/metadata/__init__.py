"""The cluster map: nodes, keyspaces, partitions, replicas, rules; versioned and replicated."""

__version__ = "0.1.0"
