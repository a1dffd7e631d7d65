"""``python -m emulators.azure_speech --port 8790 [knobs]``: the Speech (USP) emulator in the foreground."""

from __future__ import annotations

import argparse
import logging
import time

from emulators.azure_speech.emulator import AzureSpeechEmulator
from emulators.azure_speech.knobs import SpeechKnobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulators.azure_speech", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--key", default=None, help="required Ocp-Apim-Subscription-Key (default: none)")
    parser.add_argument(
        "--voice", action="append", help="allowed voice (repeatable; default any xx-XX-*Neural)"
    )
    parser.add_argument("--transcript", action="append", help="recognised text (repeatable; cycled)")
    parser.add_argument("--tts-first-chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--tts-chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--stt-latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    emulator = AzureSpeechEmulator(
        host=args.host,
        port=args.port,
        subscription_key=args.key,
        voices=args.voice,
        transcripts=args.transcript,
        knobs=SpeechKnobs(
            tts_first_chunk_delay_s=args.tts_first_chunk_delay_ms / 1000,
            tts_chunk_delay_s=args.tts_chunk_delay_ms / 1000,
            stt_latency_s=args.stt_latency_ms / 1000,
        ),
    ).start()
    logging.getLogger("emulators.azure_speech").info(
        "Azure Speech emulator on %s (SpeechConfig(host=...)); faults: POST %s/_emulator/faults",
        emulator.url,
        emulator.http_url,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emulator.stop()


if __name__ == "__main__":
    main()
