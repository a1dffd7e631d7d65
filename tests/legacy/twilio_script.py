"""A scripted Twilio for the legacy tests: signs its webhooks like Twilio and follows the TwiML it gets."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import httpx

from router.twilio_signature import sign

ACCOUNT_SID = "AC" + "0" * 32


@dataclass
class Twiml:
    status: int
    text: str
    plays: list[str] = field(default_factory=list)
    says: list[str] = field(default_factory=list)
    gather: dict[str, str] | None = None
    gather_prompt: bool = False  # the prompt is inside <Gather>, so the caller can barge in
    record: dict[str, str] | None = None
    redirect: str | None = None
    hangup: bool = False

    @classmethod
    def parse(cls, response: httpx.Response) -> Twiml:
        twiml = cls(status=response.status_code, text=response.text)
        if response.status_code != 200:
            return twiml
        root = ET.fromstring(response.text)
        assert root.tag == "Response", response.text
        for element in root:
            if element.tag == "Play":
                twiml.plays.append(element.text or "")
            elif element.tag == "Say":
                twiml.says.append(element.text or "")
            elif element.tag == "Gather":
                twiml.gather = dict(element.attrib)
                # A prompt nested in <Gather> is played the same way (and the caller may interrupt it).
                for nested in element:
                    if nested.tag == "Play":
                        twiml.plays.append(nested.text or "")
                        twiml.gather_prompt = True
                    elif nested.tag == "Say":
                        twiml.says.append(nested.text or "")
                        twiml.gather_prompt = True
            elif element.tag == "Record":
                twiml.record = dict(element.attrib)
            elif element.tag == "Redirect":
                twiml.redirect = element.text
            elif element.tag == "Hangup":
                twiml.hangup = True
        return twiml

    @property
    def action(self) -> str:
        if self.gather is not None:
            return self.gather["action"]
        assert self.record is not None, self.text
        return self.record["action"]


class ScriptedTwilio:
    def __init__(self, *, public_base_url: str, auth_token: str, client: httpx.AsyncClient) -> None:
        self.base = public_base_url.rstrip("/")
        self.auth_token = auth_token
        self.client = client

    async def post(
        self,
        url: str,
        params: dict[str, str],
        *,
        signature: str | None = "sign",
        idempotency_token: str | None = None,
    ) -> httpx.Response:
        if not url.startswith("http"):
            url = self.base + url
        headers = {}
        if idempotency_token is not None:
            headers["I-Twilio-Idempotency-Token"] = idempotency_token
        if signature == "sign":
            headers["X-Twilio-Signature"] = sign(self.auth_token, url, params)
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        return await self.client.post(url, data=params, headers=headers)

    def params(self, call_sid: str, **extra: str) -> dict[str, str]:
        return {
            "CallSid": call_sid,
            "AccountSid": ACCOUNT_SID,
            "From": "+15550100001",
            "To": "+15550100999",
            "CallStatus": "in-progress",
            "ApiVersion": "2010-04-01",
            "Direction": "inbound",
            **extra,
        }

    async def incoming_call(self, call_sid: str) -> Twiml:
        params = self.params(call_sid, CallStatus="ringing")
        return Twiml.parse(await self.post("/twilio/voice", params))

    async def say(self, previous: Twiml, call_sid: str, speech: str | None) -> Twiml:
        """Answer ``previous``'s ``<Gather>`` as Twilio does: ``SpeechResult`` (absent when silent)."""
        assert previous.gather is not None, previous.text
        extra = {"SpeechResult": speech, "Confidence": "0.92"} if speech is not None else {}
        return Twiml.parse(await self.post(previous.gather["action"], self.params(call_sid, **extra)))

    async def fetch_audio(self, url: str) -> bytes:
        response = await self.client.get(url)
        assert response.status_code == 200, (response.status_code, response.text[:200])
        assert response.headers["content-type"] == "audio/wav"
        return response.content
