"""Service configuration, read from the environment variables of the public contract.

Nothing reads the environment at import time: ``Settings()`` is built by the CLI (or a test) and handed
to :func:`router.app.create_app`.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PROFILE = Path(__file__).with_name("default_agent.yaml")


class Settings(BaseSettings):
    """Every knob of the service. Field names map to the upper-case environment variables."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Public surface and Twilio
    public_base_url: str = "http://127.0.0.1:8000"
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_api_base_url: str = ""

    # State and operators
    state_url: str = "sqlite:///var/state.db"
    admin_token: SecretStr = SecretStr("")
    rollout_percent: float = Field(default=0.0, ge=0, le=100)
    rollout_salt: str = "voice-router-realtime"
    caller_hash_key: SecretStr = SecretStr("")
    stream_token_secret: SecretStr = SecretStr("")
    # > 0: a token must outlive the time from our answer to Twilio's stream ``start``
    stream_token_ttl_seconds: int = Field(default=120, gt=0)
    # How long a replica reuses the rollout and breaker state it read: at most a minute, or an operator's kill
    # switch would take that long to reach every replica.
    config_cache_seconds: float = Field(default=0.5, ge=0, le=60)
    record_retention_days: float = 30.0  # call and turn records older than this are pruned (0: keep all)
    # > 0: a zero interval prunes in a busy loop (RECORD_RETENTION_DAYS=0 is the way to turn pruning off)
    record_prune_interval_seconds: float = Field(default=3600.0, gt=0)
    # Idle HTTP connections are closed after this long; longer than the clients' own idle timeout, so that
    # a pooled connection is never closed under a request (see router/server_options.py).
    http_keep_alive_seconds: float = Field(default=75.0, gt=0)

    # Agent
    agent_profile: Path = DEFAULT_PROFILE
    prices_file: Path | None = None  # YAML of list prices for the cost estimate (default: router/prices.yaml)

    # Realtime pipeline (Azure AI Voice Live)
    azure_voicelive_endpoint: str = ""
    azure_voicelive_api_key: SecretStr = SecretStr("")
    azure_voicelive_model: str = "gpt-realtime"
    azure_voicelive_voice: str = ""
    azure_voicelive_instructions: str = ""
    azure_voicelive_api_version: str = "2025-10-01"
    realtime_audio_mode: Literal["g711_ulaw", "pcm16"] = "g711_ulaw"
    realtime_session_max_age_seconds: float = 28 * 60
    realtime_session_ready_timeout_seconds: float = 5.0
    realtime_reconnect_timeout_seconds: float = 3.0
    # Realtime bridge internals (added by the realtime-pipeline work)
    realtime_open_timeout_seconds: float = 3.0  # TCP + WebSocket upgrade to Voice Live
    realtime_start_timeout_seconds: float = 10.0  # Twilio's ``start`` must arrive this soon after the upgrade
    realtime_move_grace_seconds: float = (
        10.0  # after a move to legacy, wait this long for Twilio to end the stream
    )
    # A Voice Live session silent this long while it owes a reply's events is stuck: dropped and handled as
    # lost (reconnect once, else move to legacy). 0: never.
    realtime_stall_seconds: float = Field(default=6.0, ge=0)
    # Per call, inbound; excess is dropped. At least the 50 a second Twilio sends, or real audio is dropped.
    realtime_max_frames_per_second: float = Field(default=200.0, ge=50)
    realtime_frame_burst: int = Field(default=500, ge=1)  # frames accepted at once above that rate
    # Realtime calls one worker serves at once (0: no limit); more go to legacy. Past its core's capacity
    # every call on a worker degrades together (bench.bridge: 125 sustained per 2.3 GHz core; size from it).
    realtime_max_calls: int = Field(default=100, ge=0)

    # Circuit breaker (defaults sized for phone traffic; see flags/breaker.py for the reasoning)
    # At most the stores' bucket retention (WINDOW_RETENTION_SECONDS in router/store/sqlite.py and redis.py):
    # a longer window would silently count only the last 2 h.
    breaker_window_seconds: int = Field(default=300, ge=1, le=7_200)
    breaker_minimum_calls: int = Field(default=10, ge=1)
    breaker_failure_rate_threshold: float = Field(default=50.0, gt=0, le=100)
    breaker_slow_call_rate_threshold: float = Field(default=80.0, gt=0, le=100)
    breaker_slow_call_seconds: float = Field(default=4.0, gt=0)
    # > 0: the default trial timeout is twice this, and a zero timeout would release every trial at once
    breaker_wait_open_seconds: float = Field(default=60.0, gt=0)
    breaker_half_open_calls: int = Field(default=3, ge=1)
    breaker_consecutive_connect_failures: int = Field(default=3, ge=0)

    # Legacy pipeline
    azure_openai_endpoint: str = ""
    azure_openai_api_key: SecretStr = SecretStr("")
    azure_openai_deployment: str = "gpt-4o-mini"
    azure_openai_api_version: str = "2024-10-21"
    openai_api_key: SecretStr = SecretStr("")
    openai_base_url: str = ""
    openai_model: str = "gpt-4o-mini"
    azure_speech_key: SecretStr = SecretStr("")
    azure_speech_region: str = ""
    azure_speech_host: str = ""
    azure_storage_connection_string: SecretStr = SecretStr("")
    azure_storage_container: str = "tts-audio"
    legacy_stt_mode: Literal["twilio", "azure"] = "twilio"
    # A turn's answer must reach Twilio inside its 15 s webhook timeout: the deadline, then up to 1 s each for
    # the history and counter writes behind the reply. Past 12 s a slow turn got Twilio's application error.
    legacy_turn_deadline_seconds: float = Field(default=10.0, gt=0, le=12)
    legacy_warm_phrases_on_start: bool = True  # synthesise greeting and fixed phrases at start-up
    # Legacy pipeline internals (added by the legacy-pipeline work)
    legacy_tts_first_chunk_timeout_ms: int = (
        3000  # Speech SDK first-chunk timeout; SDK default is 40 s + 1 retry
    )
    # Syntheses in flight at once per worker (each waits on the SDK in a thread of its own pool: the event
    # loop's default executor has only min(32, cores + 4) threads, 6 on a 2-core box, and queued the rest)
    legacy_tts_max_concurrent: int = Field(default=64, ge=1)
    legacy_stt_timeout_seconds: float = 6.0  # Azure STT of a recording (the SDK has no bound of its own)
    # Azure STT recognitions running at once per worker, each on a thread of its own. A timed-out one keeps
    # its thread until the SDK gives up, and counts until then; past the limit a turn fails at once (apology).
    legacy_stt_max_concurrent: int = Field(default=32, ge=1)
    legacy_blob_sas_minutes: float = 15.0  # lifetime of the read-only SAS URL in <Play>
    legacy_blob_retention_hours: float = 24.0  # per-turn reply audio older than this is deleted
    legacy_blob_cleanup_interval_seconds: float = 3600.0  # 0 disables the periodic clean-up
    legacy_resume_phrase: str = (
        "Sorry about that. Let's carry on."  # a call moved over from realtime hears this
    )

    # Local profile: set by ``serve --local``; names of the services an emulator stands in for.
    local_profile: bool = False

    @field_validator("rollout_percent")
    @classmethod
    def _percent_step(cls, percent: float) -> float:
        """0.01 % steps, as ``rollout set`` takes: a finer value was rounded (0.005 to no rollout at all)."""
        exponent = Decimal(str(percent)).normalize().as_tuple().exponent
        if isinstance(exponent, int) and exponent < -2:
            raise ValueError("at most two decimals (0.01% steps)")
        return percent

    @field_validator("public_base_url")
    @classmethod
    def _origin_has_a_host(cls, url: str) -> str:
        """TwiML URLs and signatures are built from it: an http(s) URL with no host cannot be either."""
        parts = urlsplit(url)
        if parts.scheme.lower() in ("http", "https") and not parts.hostname:
            raise ValueError(f"no host in {url!r}: expected an origin like https://voice.example.com")
        return url

    @field_validator("agent_profile", "prices_file")
    @classmethod
    def _readable_file(cls, path: Path | None) -> Path | None:
        """Found at start-up, not at the first call that needs the profile or the prices."""
        if path is not None and not path.is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @field_validator("prices_file")
    @classmethod
    def _price_list(cls, path: Path | None) -> Path | None:
        """Read at start-up: a broken price list stops it in one line, not with a traceback."""
        if path is not None:
            from router.comparison import Prices  # only when set: the report's imports are not small

            Prices.load(path)
        return path

    def missing_required(self) -> list[str]:
        """Environment variables a production start needs but does not have, one name each."""
        missing: list[str] = []
        if not self.public_base_url.startswith("https://"):
            missing.append("PUBLIC_BASE_URL (an https:// origin Twilio can reach)")
        if not self.twilio_account_sid:
            missing.append("TWILIO_ACCOUNT_SID")
        if not self.twilio_auth_token.get_secret_value():
            missing.append("TWILIO_AUTH_TOKEN")
        if not self.admin_token.get_secret_value():
            missing.append("ADMIN_TOKEN")
        if not self.azure_voicelive_endpoint:
            missing.append("AZURE_VOICELIVE_ENDPOINT")
        if not (self.azure_openai_endpoint or self.openai_api_key.get_secret_value()):
            missing.append("AZURE_OPENAI_ENDPOINT or OPENAI_API_KEY")
        if not self.azure_speech_key.get_secret_value():
            missing.append("AZURE_SPEECH_KEY")
        if not (self.azure_speech_region or self.azure_speech_host):
            missing.append("AZURE_SPEECH_REGION or AZURE_SPEECH_HOST")
        if not self.azure_storage_connection_string.get_secret_value():
            missing.append("AZURE_STORAGE_CONNECTION_STRING")
        return missing
