"""The webhook form parser agrees with the standard library on everything Twilio (or an attacker) sends."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest

from router.twilio_request import parse_form


@pytest.mark.parametrize(
    "text",
    [
        urlencode({"CallSid": "CA" + "1" * 32, "From": "+14155550100", "To": "client:alice", "Caller": ""}),
        urlencode(
            {
                "SpeechResult": "I'd like 2 book an appt & cancel the old one, ok? 100% sure",
                "Confidence": "0.9",
            }
        ),
        urlencode({"Unicode": "Grüße, 日本語 – ünïcödé", "Plus": "a+b c"}),
        "a=1&a=2&b=&c&&d=%2B%2b%25&e=x%20y+z",
        "",
        "=novalue&novalue=&%3D=%26",
        "name%5B%5D=1&odd%zz=bad%escape",
    ],
)
def test_parse_form_matches_parse_qsl(text: str) -> None:
    assert parse_form(text) == dict(parse_qsl(text, keep_blank_values=True))
