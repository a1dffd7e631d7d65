"""Static configuration of a Voice Live emulator instance (what it says and how it authenticates)."""

from __future__ import annotations

from dataclasses import dataclass, field

from emulators.voicelive.faults import Faults
from emulators.voicelive.script import ReplyEntry, parse_entry

DEFAULT_REPLIES: tuple[str, ...] = (
    "Hello, thanks for calling Contoso Dental. How can I help you today?",
    "Sure, I can help you book an appointment. What day works best for you?",
    "We have an opening on Tuesday at ten in the morning. Shall I book it for you?",
    "All set. You're booked for Tuesday at ten. Is there anything else I can help with?",
)

DEFAULT_USER_TRANSCRIPTS: tuple[str, ...] = (
    "Hi, I'd like to book a cleaning.",
    "Tuesday would be great.",
    "Yes please.",
    "No, that's all. Thank you.",
)


@dataclass
class VoiceLiveEmulatorConfig:
    """How the emulator behaves when nothing goes wrong; ``faults`` holds the initial fault/latency knobs."""

    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    api_keys: tuple[str, ...] = ("emulator-key",)
    """Accepted ``api-key`` header/query values."""
    bearer_tokens: tuple[str, ...] = ("emulator-token",)
    """Accepted ``Authorization: Bearer`` tokens; ``accept_any_bearer`` accepts every non-empty one."""
    accept_any_bearer: bool = False
    require_auth: bool = True
    replies: tuple[ReplyEntry, ...] = DEFAULT_REPLIES
    """The reply script, used in turn and cycled: texts, or ``{"tool_calls": [{"name", "arguments"}, ...]}``
    entries for function calls (see ``script.py``)."""
    follow_say_exactly: bool = False
    """Speak the words a ``response.create``'s instructions ask for verbatim (greeting, wait phrase, silence
    reprompt) instead of the next script entry, which stays next (see ``script.py``). Off by default, as
    scripts written for the plain behaviour count those responses as entries."""
    user_transcripts: tuple[str, ...] = DEFAULT_USER_TRANSCRIPTS
    """Transcripts reported for committed user audio (when input transcription is on), cycled."""
    ms_per_char: int = 65
    """Length of synthesized reply audio per character of reply text."""
    chunk_ms: int = 100
    """Audio per ``response.audio.delta``."""
    vad_frame_ms: int = 10
    default_model: str = "gpt-realtime"
    rate_limit_tokens: int = 400_000
    max_held_events: int = 500
    """Per session, events held during a stall (beyond it the oldest audio is dropped): 50 s of 100 ms
    deltas, at most ~3 MB of base64 pcm16."""
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.max_held_events < 1:
            raise ValueError("max_held_events must be at least 1")
        self.replies = tuple(self.replies)
        for index, entry in enumerate(self.replies):
            try:
                parse_entry(entry)
            except ValueError as problem:
                raise ValueError(f"replies[{index}]: {problem}") from None
