"""The benchmark's in-audio send stamps: they must keep the payload valid base64 of the same length and read
back as a small age, and anything that is not a stamp must read back as -1 rather than as a latency."""

from __future__ import annotations

import base64
import time

from bench.stamps import STAMP_CHARS, age_us, split_at, stamp_now


def test_a_stamped_payload_is_the_same_length_and_still_base64() -> None:
    audio = base64.b64encode(bytes(range(160)))  # 216 characters, "==" padded, as Twilio sends 20 ms
    frame = b'{"payload":"' + audio + b'"}'
    head, tail = split_at(frame, b'"payload":"')
    stamped = head + stamp_now() + tail
    assert len(stamped) == len(frame)
    payload = stamped[len(b'{"payload":"') : -2]
    decoded = base64.b64decode(payload, validate=True)
    assert len(decoded) == 160
    assert decoded[6:] == bytes(range(160))[6:]  # only the first 6 bytes carry the stamp


def test_a_stamp_reads_back_as_the_time_since_it_was_made() -> None:
    stamp = stamp_now()
    assert len(stamp) == STAMP_CHARS
    time.sleep(0.01)
    age = age_us(stamp)
    assert 10_000 <= age < 5_000_000


def test_what_is_not_a_stamp_reads_back_as_minus_one() -> None:
    assert age_us(b"!!!!!!!!") == -1  # not base64
    long_ago = (time.monotonic_ns() // 1000 + (1 << 47)) % (1 << 48)  # half the stamp's range away
    assert age_us(base64.b64encode(long_ago.to_bytes(6, "big"))) == -1  # base64, but not a recent time
