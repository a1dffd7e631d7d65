"""``python -m emulators.azure_speech --port 8790 [knobs]``: the Speech (USP) emulator in the foreground."""

from __future__ import annotations

from emulators.azure_speech.emulator import AzureSpeechEmulator
from emulators.azure_speech.knobs import SpeechKnobs
from emulators.control import cli_parser, serve_in_foreground


def main(argv: list[str] | None = None) -> None:
    parser = cli_parser("python -m emulators.azure_speech", __doc__, port=8790)
    parser.add_argument("--key", default=None, help="required Ocp-Apim-Subscription-Key (default: none)")
    parser.add_argument(
        "--voice", action="append", help="allowed voice (repeatable; default any xx-XX-*Neural)"
    )
    parser.add_argument("--transcript", action="append", help="recognised text (repeatable; cycled)")
    parser.add_argument("--tts-first-chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--tts-chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--stt-latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
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
    serve_in_foreground(
        emulator,
        "emulators.azure_speech",
        "Azure Speech emulator on %s (SpeechConfig(host=...)); faults: POST %s/_emulator/faults",
        emulator.url,
        emulator.http_url,
    )


if __name__ == "__main__":
    main()
