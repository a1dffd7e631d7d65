"""The Voice Live ``session`` object, built from the agent profile both pipelines share.

Environment overrides (``AZURE_VOICELIVE_VOICE``, ``AZURE_VOICELIVE_INSTRUCTIONS``) win over the profile so an
operator can change the realtime voice without touching the shared YAML.
"""

from __future__ import annotations

from typing import Any, Literal

from router.agent_profile import AgentProfile

AudioMode = Literal["g711_ulaw", "pcm16"]

OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)


def voice_object(name: str) -> dict[str, Any]:
    """OpenAI voice names → ``{"type":"openai"}``; anything else is an Azure neural/HD voice name."""
    if name.lower() in OPENAI_VOICES:
        return {"type": "openai", "name": name.lower()}
    return {"type": "azure-standard", "name": name}


def turn_detection(profile: AgentProfile) -> dict[str, Any]:
    td = profile.turn_detection
    out: dict[str, Any] = {
        "type": td.type,
        "threshold": td.threshold,
        "prefix_padding_ms": td.prefix_padding_ms,
        "silence_duration_ms": td.silence_duration_ms,
        "create_response": td.create_response,
        "interrupt_response": td.interrupt_response,
    }
    if td.speech_duration_ms is not None:
        out["speech_duration_ms"] = td.speech_duration_ms
    if td.remove_filler_words is not None and td.type != "server_vad":
        out["remove_filler_words"] = td.remove_filler_words
    return out


def build_session(
    profile: AgentProfile,
    *,
    audio_mode: AudioMode = "g711_ulaw",
    voice_override: str = "",
    instructions_override: str = "",
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``session`` of ``session.update``; ``tools`` in Voice Live's shape (``ToolRunner.session_tools``)."""
    session: dict[str, Any] = {
        "modalities": ["text", "audio"],
        "instructions": instructions_override or profile.instructions,
        "voice": voice_object(voice_override or profile.voice),
        "turn_detection": turn_detection(profile),
        "temperature": profile.temperature,
        "max_response_output_tokens": profile.max_output_tokens,
    }
    if audio_mode == "g711_ulaw":
        session["input_audio_format"] = "g711_ulaw"
        session["output_audio_format"] = "g711_ulaw"
        session["input_audio_sampling_rate"] = 8000
    else:
        session["input_audio_format"] = "pcm16"
        session["output_audio_format"] = "pcm16"
        session["input_audio_sampling_rate"] = 24000
    if profile.noise_suppression:
        session["input_audio_noise_reduction"] = {"type": "azure_deep_noise_suppression"}
    if profile.echo_cancellation:
        session["input_audio_echo_cancellation"] = {"type": "server_echo_cancellation"}
    if profile.input_transcription:
        transcription: dict[str, Any] = {"model": profile.input_transcription}
        if profile.language and profile.input_transcription == "azure-speech":
            transcription["language"] = profile.language
        session["input_audio_transcription"] = transcription
    if tools:
        session["tools"] = tools
        session["tool_choice"] = profile.tool_choice
    return session


def greeting_instructions(greeting: str) -> str:
    """Instructions for the first response so the agent opens the call with the profile's greeting."""
    return f"Greet the caller by saying exactly this, and nothing else: {greeting}"


def wait_phrase_instructions(phrase: str) -> str:
    """Instructions for the short response that covers a slow tool: the phrase only, no answer yet."""
    return f"You are waiting for a tool's answer. Say exactly this, and nothing else: {phrase}"


def silence_reprompt_instructions(phrase: str) -> str:
    """Instructions for the check on a caller who has said nothing for a while."""
    return f"The caller has been silent for a while. Say exactly this, and nothing else: {phrase}"


def silence_goodbye_instructions(phrase: str) -> str:
    """Instructions for the last words to a caller who stayed silent: the call ends after them."""
    return (
        f"The caller has stayed silent and the call is ending. Say exactly this, and nothing else: {phrase}"
    )


def repeat_request_instructions() -> str:
    """Instructions for the reply owed after a lost session when the caller's last words never reached us as
    text: the new session cannot answer them, so it asks for them again instead of guessing."""
    return (
        "The line dropped for a moment and you did not hear what the caller just said. Apologise in one short "
        "sentence and ask them to say it again."
    )
