"""TwiML for the legacy turn loop, built with the twilio library so every attribute and URL is escaped.

Every answer ends by listening again: ``<Gather input="speech">`` (Twilio recognises the speech) or
``<Record>`` (we transcribe it). ``actionOnEmptyResult`` plus a trailing ``<Redirect>`` make sure silence
comes back to us as an empty turn instead of Twilio falling off the end of the document and hanging up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from twilio.twiml import TwiML
from twilio.twiml.voice_response import Gather, VoiceResponse

from router.agent_profile import AgentProfile

TURN_PATH = "/legacy/turn"
START_PATH = "/legacy/start"
RECORDING_PATH = "/legacy/recording"

RECORD_MAX_LENGTH_S = 30
RECORD_DEFAULT_SILENCE_S = 2


class TwimlBuilder:
    """Knows the public URLs and the profile's listening options; returns TwiML documents as text."""

    def __init__(
        self,
        *,
        public_base_url: str,
        profile: AgentProfile,
        stt_mode: Literal["twilio", "azure"] = "twilio",
    ) -> None:
        base = public_base_url.rstrip("/")
        self.turn_url = base + TURN_PATH
        self.recording_url = base + RECORDING_PATH
        self._profile = profile
        self._stt_mode = stt_mode
        self._listen_document: str | None = None
        options = profile.legacy
        self._speech_timeout = options.speech_timeout
        self._hints = ", ".join(options.hints) if options.hints else None
        self._record_silence_s = (
            int(options.speech_timeout) if options.speech_timeout.isdigit() else RECORD_DEFAULT_SILENCE_S
        )

    @property
    def endpointing_ms(self) -> float | None:
        """The silence Twilio waits for before it ends the caller's turn, when it is a fixed number."""
        if self._stt_mode == "azure":
            return self._record_silence_s * 1000.0
        if self._speech_timeout.isdigit():
            return int(self._speech_timeout) * 1000.0
        return None

    def play_and_listen(self, audio_url: str) -> str:
        response = VoiceResponse()
        self._listen(response, lambda verb: verb.play(audio_url))
        return str(response)

    def say_and_listen(self, text: str) -> str:
        response = VoiceResponse()
        self._listen(response, lambda verb: verb.say(text, language=self._profile.language))
        return str(response)

    def listen(self) -> str:
        """Just listen (no prompt): the same document every time, so it is built once."""
        if self._listen_document is None:
            response = VoiceResponse()
            self._listen(response, None)
            self._listen_document = str(response)
        return self._listen_document

    def goodbye(self, *, text: str, audio_url: str | None = None) -> str:
        response = VoiceResponse()
        if audio_url:
            response.play(audio_url)
        else:
            response.say(text, language=self._profile.language)
        response.hangup()
        return str(response)

    def _listen(self, response: VoiceResponse, prompt: Callable[[TwiML], object] | None) -> None:
        """Speak ``prompt`` and listen. With Twilio's recognition the prompt goes *inside* ``<Gather>`` so
        the caller can interrupt it (Gather's bargeIn); ``<Record>`` cannot nest one, so it plays first."""
        if self._stt_mode == "azure":
            if prompt is not None:
                prompt(response)
            response.record(
                action=self.recording_url,
                method="POST",
                timeout=self._record_silence_s,
                max_length=RECORD_MAX_LENGTH_S,
                play_beep=False,
                trim="trim-silence",
            )
            response.redirect(self.recording_url, method="POST")
            return
        gather = Gather(
            input="speech",
            action=self.turn_url,
            method="POST",
            language=self._profile.language,
            speech_timeout=self._speech_timeout,
            action_on_empty_result=True,
            **({"hints": self._hints} if self._hints else {}),
        )
        if prompt is not None:
            prompt(gather)
        response.append(gather)
        response.redirect(self.turn_url, method="POST")
