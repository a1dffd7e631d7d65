"""KeyedSha256 is HMAC-SHA256 exactly: caller hashes and stream tokens stay what they were."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from router.keyed_mac import KeyedSha256


@pytest.mark.parametrize("message", [b"", b"+14155550123", b"CA" + b"0" * 32 + b".1790000000", b"x" * 5000])
def test_equals_hmac_sha256(message: bytes) -> None:
    key = b"caller-hash-key"
    assert KeyedSha256(key).digest(message) == hmac.new(key, message, hashlib.sha256).digest()


def test_the_keyed_object_is_not_consumed_between_messages() -> None:
    mac = KeyedSha256(b"k")
    first = mac.digest(b"one")
    mac.digest(b"two")
    assert mac.digest(b"one") == first
