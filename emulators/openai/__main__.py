"""``python -m emulators.openai --port 8780 [knobs]``: the chat-completions emulator in the foreground."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from emulators.control import cli_parser, serve_in_foreground
from emulators.openai.emulator import OpenAIEmulator
from emulators.openai.knobs import OpenAIKnobs
from emulators.openai.replies import ReplySource


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``script`` holds ``--script`` and ``--script-json`` entries in the order given."""
    parser = cli_parser("python -m emulators.openai", __doc__, port=8780)
    parser.add_argument("--api-key", default=None, help="required key (default: accept any non-empty key)")
    parser.add_argument(
        "--deployment", action="append", help="allowed Azure deployment (repeatable; default any)"
    )
    parser.add_argument(
        "--script", action="append", dest="script", help="scripted text reply (repeatable; cycled)"
    )
    parser.add_argument(
        "--script-json",
        action="append",
        dest="script",
        type=_script_json,
        metavar="JSON",
        help='scripted entry as JSON, e.g. \'{"tool_calls": [{"name": "check_availability", "arguments": '
        '{"day": "Tuesday"}}]}\' (repeatable; kept in order with --script)',
    )
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    emulator = OpenAIEmulator(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        deployments=args.deployment,
        script=args.script,
        knobs=OpenAIKnobs(
            first_token_delay_s=args.first_token_delay_ms / 1000, token_delay_s=args.token_delay_ms / 1000
        ),
    ).start()
    serve_in_foreground(
        emulator,
        "emulators.openai",
        "OpenAI emulator on %s (OpenAI base_url %s); faults: POST %s/_emulator/faults",
        emulator.url,
        emulator.openai_base_url,
        emulator.url,
    )


def _script_json(text: str) -> Any:
    """One ``--script-json`` value, checked here so a typo fails at start-up with argparse's usage line."""
    try:
        entry = orjson.loads(text)
        ReplySource.check_script([entry])
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return entry


if __name__ == "__main__":
    main()
