"""The local profile: ``python -m router serve --local`` (``make run``) with emulators for every cloud
service that has no credentials.

This is the only place the service is wired to emulators, and it says so loudly: one WARNING line per
emulated service, naming it and where the emulator listens. Services that do have credentials in the
environment are used for real.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from router.settings import Settings

log = logging.getLogger("router.local_profile")

LOCAL_TWILIO_ACCOUNT_SID = "AC" + "0" * 32
LOCAL_TWILIO_AUTH_TOKEN = "local-twilio-auth-token"
LOCAL_ADMIN_TOKEN = "local-admin-token"
LOCAL_VOICELIVE_KEY = "local-voicelive-key"
LOCAL_OPENAI_KEY = "sk-local-emulator"
LOCAL_SPEECH_KEY = "local-speech-key"


class Stoppable(Protocol):
    def stop(self) -> None: ...


def _announce(service: str, where: str) -> None:
    log.warning("LOCAL PROFILE: %s is an EMULATOR at %s, not the real service", service, where)


def start_local_services(
    settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, var_dir: Path = Path("var")
) -> tuple[Settings, list[Stoppable]]:
    """Start an emulator for each service without credentials; returns the settings pointing at them."""
    updates: dict[str, Any] = {"local_profile": True}
    started: list[Stoppable] = []
    try:
        if not settings.public_base_url.startswith("https://"):
            updates["public_base_url"] = f"http://{host}:{port}"
        if not settings.twilio_auth_token.get_secret_value():
            from emulators.twilio.rest import TwilioRestEmulator

            rest = TwilioRestEmulator(LOCAL_TWILIO_ACCOUNT_SID, LOCAL_TWILIO_AUTH_TOKEN).start()
            started.append(rest)
            updates |= {
                "twilio_account_sid": LOCAL_TWILIO_ACCOUNT_SID,
                "twilio_auth_token": LOCAL_TWILIO_AUTH_TOKEN,
                "twilio_api_base_url": rest.url,
            }
            _announce("Twilio REST API", rest.url)
            log.warning(
                "LOCAL PROFILE: Twilio webhooks are validated with the dev auth token %r",
                LOCAL_TWILIO_AUTH_TOKEN,
            )
        if not settings.admin_token.get_secret_value():
            updates["admin_token"] = LOCAL_ADMIN_TOKEN
            log.warning(
                "LOCAL PROFILE: admin API token is %r (set ADMIN_TOKEN to change it)", LOCAL_ADMIN_TOKEN
            )
        if not settings.azure_voicelive_endpoint:
            from emulators.voicelive import VoiceLiveEmulator, VoiceLiveEmulatorConfig

            voicelive = VoiceLiveEmulator(VoiceLiveEmulatorConfig(api_keys=(LOCAL_VOICELIVE_KEY,))).start()
            started.append(voicelive)
            updates |= {
                "azure_voicelive_endpoint": voicelive.url,
                "azure_voicelive_api_key": LOCAL_VOICELIVE_KEY,
            }
            _announce("Azure AI Voice Live", voicelive.url)
        if not (settings.azure_openai_endpoint or settings.openai_api_key.get_secret_value()):
            from emulators.openai import OpenAIEmulator

            openai = OpenAIEmulator(api_key=LOCAL_OPENAI_KEY).start()
            started.append(openai)
            updates |= {"openai_base_url": openai.openai_base_url, "openai_api_key": LOCAL_OPENAI_KEY}
            _announce("OpenAI chat completions", openai.openai_base_url)
        if not settings.azure_speech_key.get_secret_value():
            from emulators.azure_speech import AzureSpeechEmulator

            speech = AzureSpeechEmulator(subscription_key=LOCAL_SPEECH_KEY).start()
            started.append(speech)
            updates |= {
                "azure_speech_key": LOCAL_SPEECH_KEY,
                "azure_speech_host": speech.url,
                "azure_speech_region": "",
            }
            _announce("Azure Speech (TTS/STT)", speech.url)
        if not settings.azure_storage_connection_string.get_secret_value():
            from emulators.azurite import AzuriteProcess

            azurite = AzuriteProcess(location=var_dir / "azurite").start()
            started.append(azurite)
            updates["azure_storage_connection_string"] = azurite.connection_string
            _announce("Azure Blob storage (Azurite)", azurite.url)
    except BaseException:
        for service in reversed(started):
            service.stop()
        raise
    if settings.state_url.startswith("sqlite:///") and not settings.state_url.startswith("sqlite:////"):
        Path(settings.state_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    secret_fields = {name for name, field in Settings.model_fields.items() if field.annotation is SecretStr}
    typed = {k: SecretStr(v) if k in secret_fields and isinstance(v, str) else v for k, v in updates.items()}
    return settings.model_copy(update=typed), started
