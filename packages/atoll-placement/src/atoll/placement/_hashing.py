"""Stable hashing: key -> partition, and the rendezvous (HRW) scores placement ranks by.

Owns: the one hash function every process, version and platform must agree on — xxh3_64
(seed 0) of the raw key bytes — and the per-(partition, node) rendezvous hash.
Never: changes its output for a given input (data would silently land on the wrong
partition); imports IO, time or random.
"""

from __future__ import annotations

import xxhash

__all__ = ["key_hash", "keyspace_seed", "partition_for_key", "rendezvous_hash"]

_xxh3 = xxhash.xxh3_64_intdigest


def key_hash(key: bytes | bytearray | memoryview) -> int:
    """The stable unsigned 64-bit hash of ``key``: xxh3_64 of its raw bytes, seed 0."""
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"keys are bytes, got {type(key).__name__}")
    return _xxh3(key)


def partition_for_key(key: bytes | bytearray | memoryview, partitions: int) -> int:
    """The partition of ``key`` in a keyspace of ``partitions`` partitions.

    ``key_hash(key) % partitions``: the same on every node and client, forever. The
    partition count of a keyspace is fixed at creation, so this never changes for a key.
    """
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"partitions must be an int >= 1, got {partitions!r}")
    return key_hash(key) % partitions


def keyspace_seed(keyspace: str) -> int:
    """The rendezvous seed of a keyspace, so that two keyspaces spread independently."""
    return _xxh3(keyspace.encode("utf-8"))


def rendezvous_hash(seed: int, partition: int, node_id: str) -> int:
    """The rendezvous weight of ``node_id`` for ``partition`` (higher = preferred).

    Integer-only on purpose: no floating-point logarithm whose last bit could differ
    between C libraries, so every process ranks nodes identically.
    """
    return _xxh3(node_id.encode("utf-8") + partition.to_bytes(8, "big"), seed)
