"""``SpeechConfig`` from our settings: region (Azure) or host (container, emulator), key either way."""

from __future__ import annotations

from azure.cognitiveservices import speech as speechsdk


class SpeechError(Exception):
    """The Speech service refused or failed a request (carries the SDK's cancellation details)."""


def build_speech_config(*, key: str, region: str = "", host: str = "") -> speechsdk.SpeechConfig:
    if host:
        return speechsdk.SpeechConfig(host=host, subscription=key or None)
    if not region:
        raise ValueError("AZURE_SPEECH_REGION or AZURE_SPEECH_HOST is required")
    return speechsdk.SpeechConfig(subscription=key, region=region)


def describe_cancellation(result: speechsdk.SpeechSynthesisResult | speechsdk.SpeechRecognitionResult) -> str:
    details = result.cancellation_details
    return f"{details.reason.name}: {details.error_details}" if details else str(result.reason)
