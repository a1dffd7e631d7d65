"""Bad input: forged callbacks, unknown calls, absurd speech, runaway replies, SSML in model output."""

from __future__ import annotations

import pytest

from router.twilio_signature import sign
from tests.legacy.conftest import AUTH_TOKEN, HarnessFactory
from tests.legacy.twilio_script import Twiml

CALL = "CA" + "b" * 32


@pytest.mark.parametrize("path", ["/legacy/turn", "/legacy/start", "/legacy/recording"])
async def test_unsigned_or_forged_callbacks_are_refused(legacy: HarnessFactory, path: str) -> None:
    h = await legacy()
    params = h.twilio.params(CALL, SpeechResult="hello", RecordingUrl="http://127.0.0.1:1/r")
    url = h.url + path
    attempts = {
        "unsigned": None,
        "garbage": "bm90IGEgc2lnbmF0dXJl",
        "wrong token": sign("not-the-token", url, params),
        "tampered body": sign(AUTH_TOKEN, url, {**params, "SpeechResult": "something else"}),
        "other path": sign(AUTH_TOKEN, h.url + "/legacy/elsewhere", params),
    }
    for name, signature in attempts.items():
        response = await h.twilio.post(path, params, signature=signature)
        assert response.status_code == 403, name
    assert h.sample("voice_router_rejected_requests_total", route=path, reason="signature") == len(attempts)
    # Nothing was recorded and no service was called.
    assert await h.list_turns(CALL) == []
    assert await h.store.get_history(CALL) == []
    assert h.openai.requests == [] and h.speech.syntheses == []
    # The genuine request still works.
    assert (await h.twilio.post(path, params)).status_code == 200


async def test_missing_call_sid_is_a_clear_400(legacy: HarnessFactory) -> None:
    h = await legacy()
    params = {"SpeechResult": "hello"}
    response = await h.twilio.post("/legacy/turn", params)
    assert response.status_code == 400 and "CallSid" in response.text


async def test_absurdly_long_speech_is_truncated_before_the_llm(legacy: HarnessFactory) -> None:
    h = await legacy(profile_legacy={"max_speech_chars": 200})
    twiml = Twiml.parse(
        await h.twilio.post("/legacy/turn", h.twilio.params(CALL, SpeechResult="blah " * 10_000))
    )
    assert len(twiml.plays) == 1
    sent = h.openai.requests[-1].body["messages"][-1]["content"]
    assert 150 < len(sent) <= 200 and sent.startswith("blah blah")
    (turn,) = await h.list_turns(CALL)
    assert turn["user_text"] == sent


async def test_long_reply_is_bounded_before_synthesis(legacy: HarnessFactory) -> None:
    h = await legacy(profile_legacy={"max_reply_chars": 120})
    h.openai.set_script(["This reply goes on and on. " * 100])
    twiml = Twiml.parse(
        await h.twilio.post("/legacy/turn", h.twilio.params(CALL, SpeechResult="Tell me a story"))
    )
    assert len(twiml.plays) == 1
    synthesis = h.speech.syntheses[-1]
    assert 60 < len(synthesis.text) <= 120 and synthesis.text.startswith("This reply goes on")
    (turn,) = await h.list_turns(CALL)
    assert turn["assistant_text"] == synthesis.text and turn["usage"]["tts_chars"] == len(synthesis.text)


async def test_ssml_special_characters_in_model_output_cannot_break_ssml(legacy: HarnessFactory) -> None:
    h = await legacy()
    nasty = "Tom & Jerry's <b>\"bold\"</b> offer: 5 < 6 > 4 ]]> <!-- x --> </voice></speak><voice name='evil'>hi \x07"
    h.openai.set_script([nasty])
    twiml = Twiml.parse(
        await h.twilio.post("/legacy/turn", h.twilio.params(CALL, SpeechResult="Any offers?"))
    )
    assert len(twiml.plays) == 1 and not twiml.says
    synthesis = h.speech.syntheses[-1]
    assert synthesis.outcome == "completed"
    assert synthesis.voice == h.profile.voice  # no injected <voice>
    assert synthesis.text == " ".join(nasty.replace("\x07", "").split())
