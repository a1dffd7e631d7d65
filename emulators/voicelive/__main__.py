"""``python -m emulators.voicelive --port P [knobs]``: run the Voice Live emulator in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence

import orjson

from emulators.voicelive.config import VoiceLiveEmulatorConfig
from emulators.voicelive.emulator import VoiceLiveEmulator
from emulators.voicelive.faults import Faults
from emulators.voicelive.script import ReplyEntry, parse_entry


def reply_json(value: str) -> ReplyEntry:
    """One ``--reply-json`` value, checked now so a typo fails at start-up rather than mid-call."""
    try:
        entry = orjson.loads(value)
        parse_entry(entry)
    except (orjson.JSONDecodeError, ValueError) as problem:
        raise argparse.ArgumentTypeError(f"not a reply entry: {problem}") from None
    return entry  # type: ignore[no-any-return]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emulators.voicelive", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--api-key", action="append", dest="api_keys", help="accepted api-key (repeatable)")
    parser.add_argument("--bearer-token", action="append", dest="bearer_tokens", help="accepted bearer token")
    parser.add_argument("--any-bearer", action="store_true", help="accept any non-empty bearer token")
    parser.add_argument("--no-auth", action="store_true", help="accept connections without credentials")
    parser.add_argument(
        "--first-audio-ms", type=int, default=120, help="response.created → first audio delta"
    )
    parser.add_argument("--pace", type=float, default=4.0, help="x real time for audio deltas; 0 = burst")
    parser.add_argument("--delta-delay-ms", type=int, default=None, help="fixed wait between deltas")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per response.audio.delta")
    parser.add_argument("--ms-per-char", type=int, default=65, help="reply audio length per text character")
    parser.add_argument(
        "--reply", action="append", dest="replies", help="assistant reply text (repeatable, cycled)"
    )
    parser.add_argument(
        "--reply-json",
        action="append",
        dest="replies",
        type=reply_json,
        metavar="JSON",
        help='a reply as JSON: a text, or {"tool_calls": [{"name": ..., "arguments": {...}}]} '
        "(repeatable; joins --reply entries in command-line order)",
    )
    parser.add_argument(
        "--follow-say-exactly",
        action="store_true",
        help="speak the words a response.create's instructions ask for verbatim (greeting, reprompts) "
        "instead of the next reply",
    )
    parser.add_argument(
        "--expire-after-s", type=float, default=None, help="session lifetime (session_expired)"
    )
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> VoiceLiveEmulatorConfig:
    defaults = VoiceLiveEmulatorConfig()
    return VoiceLiveEmulatorConfig(
        host=args.host,
        port=args.port,
        api_keys=tuple(args.api_keys or defaults.api_keys),
        bearer_tokens=tuple(args.bearer_tokens or defaults.bearer_tokens),
        accept_any_bearer=args.any_bearer,
        require_auth=not args.no_auth,
        replies=tuple(args.replies or defaults.replies),
        follow_say_exactly=args.follow_say_exactly,
        ms_per_char=args.ms_per_char,
        chunk_ms=args.chunk_ms,
        faults=Faults(
            first_audio_ms=args.first_audio_ms,
            pace=args.pace,
            delta_delay_ms=args.delta_delay_ms,
            expire_after_s=args.expire_after_s,
        ),
    )


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    emulator = VoiceLiveEmulator(config_from_args(parse_args(argv))).start()
    print(f"voicelive emulator listening on {emulator.url} (ws: {emulator.ws_url})", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
