"""key -> partition: pinned vectors, so a change of hash function can never slip through."""

from __future__ import annotations

import subprocess
import sys

import pytest

from atoll.placement import key_hash, partition_for_key

# xxh3_64 (seed 0) reference values; the first is the published hash of the empty input.
VECTORS = [
    (b"", 0x2D06800538D394C2),
    (b"a", 0xE6C632B61E964E1F),
    (b"user:42", 0x9FC1E605FA7174AA),
    (b"\x00\xff" * 8, 0x54705F9916347D63),
]


@pytest.mark.parametrize(("key", "expected"), VECTORS)
def test_key_hash_matches_xxh3_reference(key: bytes, expected: int) -> None:
    assert key_hash(key) == expected


def test_partition_vectors_are_pinned() -> None:
    # Changing any of these moves data to another partition: never change them.
    got = {
        (key, parts): partition_for_key(key, parts)
        for key in (b"", b"a", b"user:42", b"\x00\xff" * 8)
        for parts in (1, 7, 64, 1024)
    }
    assert got == PINNED


PINNED = {
    (b"", 1): 0,
    (b"", 7): 0x2D06800538D394C2 % 7,
    (b"", 64): 0x2D06800538D394C2 % 64,
    (b"", 1024): 0x2D06800538D394C2 % 1024,
    (b"a", 1): 0,
    (b"a", 7): 0xE6C632B61E964E1F % 7,
    (b"a", 64): 0xE6C632B61E964E1F % 64,
    (b"a", 1024): 0xE6C632B61E964E1F % 1024,
    (b"user:42", 1): 0,
    (b"user:42", 7): 4,
    (b"user:42", 64): 42,
    (b"user:42", 1024): 170,
    (b"\x00\xff" * 8, 1): 0,
    (b"\x00\xff" * 8, 7): 1,
    (b"\x00\xff" * 8, 64): 35,
    (b"\x00\xff" * 8, 1024): 355,
}


def test_bytes_like_keys_agree() -> None:
    key = b"order/2024/0001"
    assert key_hash(bytearray(key)) == key_hash(memoryview(key)) == key_hash(key)


def test_str_keys_are_refused() -> None:
    with pytest.raises(TypeError, match="keys are bytes"):
        key_hash("user:42")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -3, True, 2.0])
def test_bad_partition_counts_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="partitions must be"):
        partition_for_key(b"k", bad)  # type: ignore[arg-type]


def test_stable_across_processes_with_different_hash_seeds() -> None:
    keys = [f"key-{i}".encode() for i in range(50)]
    here = [partition_for_key(k, 64) for k in keys]
    code = (
        "from atoll.placement import partition_for_key;"
        "print([partition_for_key(f'key-{i}'.encode(), 64) for i in range(50)])"
    )
    for seed in ("0", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        assert out.stdout.strip() == str(here)


def test_keys_spread_evenly_over_partitions() -> None:
    counts = [0] * 64
    for i in range(64_000):
        counts[partition_for_key(i.to_bytes(8, "big"), 64)] += 1
    # 1000 expected per partition; 6 sigma is about +-190.
    assert max(counts) < 1200
    assert min(counts) > 800
