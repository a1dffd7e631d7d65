"""Sticky bucketing: the same key always lands in the same bucket, whatever the percent.

The hash is MurmurHash3 x86_32, as Unleash (``flexibleRollout``) and flagd (``fractional``) use, so a
bucket computed here can be checked against any of their SDKs. A caller is in the rollout iff its
bucket is below the percent in basis points; raising the percent only ever adds buckets, which is what
keeps a realtime caller on realtime while the rollout ramps up.

``mmh3`` (C) does the work; :func:`murmur3_x86_32_reference` is a pure-Python transcription of the
reference algorithm kept only so a test can prove the two agree.
"""

from __future__ import annotations

import mmh3

BUCKETS = 10_000  # basis points: 12.34 % is exactly 1234 buckets


def murmur3_x86_32(data: str | bytes, seed: int = 0) -> int:
    """Unsigned 32-bit MurmurHash3 (x86 variant) of ``data`` (str is hashed as UTF-8)."""
    return mmh3.hash(data, seed, signed=False)


def bucket(salt: str, key: str, buckets: int = BUCKETS) -> int:
    """The bucket in ``[0, buckets)`` of ``key`` for the rollout salted with ``salt``.

    The salt plays Unleash's ``groupId`` role: two flags with different salts bucket independently.
    """
    return mmh3.hash(f"{salt}:{key}", 0, signed=False) % buckets


def in_rollout(salt: str, key: str, percent_bp: int) -> bool:
    """True iff ``key`` falls in the first ``percent_bp`` of 10,000 buckets."""
    return bucket(salt, key) < percent_bp


def unleash_normalized(identifier: str, group: str, seed: int = 0, normalizer: int = 100) -> int:
    """Unleash's ``normalizedValue``: ``murmur3("{group}:{id}", seed) % normalizer + 1`` (1..normalizer)."""
    return mmh3.hash(f"{group}:{identifier}", seed, signed=False) % normalizer + 1


_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_MASK = 0xFFFFFFFF


def _rotl32(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def murmur3_x86_32_reference(data: str | bytes, seed: int = 0) -> int:
    """Pure-Python MurmurHash3_x86_32 (Austin Appleby's reference), for cross-checking ``mmh3`` only."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    length = len(raw)
    h = seed & _MASK
    block_end = length - length % 4
    for offset in range(0, block_end, 4):
        k = int.from_bytes(raw[offset : offset + 4], "little")
        k = (k * _C1) & _MASK
        k = _rotl32(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
        h = _rotl32(h, 13)
        h = (h * 5 + 0xE6546B64) & _MASK
    tail = raw[block_end:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * _C1) & _MASK
        k = _rotl32(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
    h ^= length
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h
