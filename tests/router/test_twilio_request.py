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
        "From=%2B14155550100&To=%2B%2B1&Lower=%2b1&Mixed=%2B1+2&Escaped=%252B&Double=%%2B&Tail=1%2B",
    ],
)
def test_parse_form_matches_parse_qsl(text: str) -> None:
    assert parse_form(text) == dict(parse_qsl(text, keep_blank_values=True))


def test_signature_is_checked_by_the_twilio_library_on_any_mapping() -> None:
    from twilio.request_validator import RequestValidator

    from router.twilio_signature import TwilioSignatureValidator

    params = {"CallSid": "CA1", "From": "+14155550100", "Digits": "1", "Empty": ""}
    url = "https://voice.example.com/twilio/voice"
    signature = RequestValidator("token").compute_signature(url, params)
    validator = TwilioSignatureValidator("token", "https://voice.example.com")
    assert validator.validate_http("/twilio/voice", "", params, signature)
    assert not validator.validate_http("/twilio/voice", "", {**params, "Digits": "2"}, signature)
    # A URL signed with the explicit default port still passes (RequestValidator's own fallback).
    with_port = RequestValidator("token").compute_signature(
        "https://voice.example.com:443/twilio/voice", params
    )
    assert validator.validate_http("/twilio/voice", "", params, with_port)


class _MultiDict(dict[str, list[str]]):
    """What Twilio signs: every value of a field (the library reads them through ``getall``)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def test_a_repeated_field_keeps_every_value_for_the_signature() -> None:
    from twilio.request_validator import RequestValidator

    from router.twilio_signature import TwilioSignatureValidator

    url = "https://voice.example.com/twilio/voice"
    signed = _MultiDict({"CallSid": ["CA1"], "Tag": ["b", "a"], "Empty": [""]})
    signature = RequestValidator("token").compute_signature(url, signed)
    form = parse_form("CallSid=CA1&Tag=b&Empty=&Tag=a")
    assert form == {"CallSid": "CA1", "Tag": "a", "Empty": ""}, "handlers still read the last value"
    validator = TwilioSignatureValidator("token", "https://voice.example.com")
    assert validator.validate_http("/twilio/voice", "", form, signature)
    assert not validator.validate_http("/twilio/voice", "", parse_form("CallSid=CA1&Tag=a&Empty="), signature)
    assert parse_form("CallSid=CA1&Tag=a").repeated is None, "a form without a repeated field pays nothing"
