"""JSON logs carry the CallSid, from the request's context or from ``extra``."""

from __future__ import annotations

import io
import logging

import orjson

from router.observability import JsonFormatter, call_sid_var


def capture(logger_name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_log_lines_are_json_with_the_call_sid_from_context() -> None:
    logger, stream = capture("test.json.context")
    token = call_sid_var.set("CA" + "1" * 32)
    try:
        logger.info("routed call to %s", "realtime", extra={"pipeline": "realtime", "reason": "rollout_in"})
    finally:
        call_sid_var.reset(token)
    logger.warning("no call here")
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["call_sid"] == "CA" + "1" * 32
    assert first["msg"] == "routed call to realtime"
    assert first["pipeline"] == "realtime" and first["reason"] == "rollout_in"
    assert first["level"] == "info" and first["ts"].endswith("Z")
    assert "call_sid" not in second


def test_explicit_call_sid_wins_and_exceptions_are_serialised() -> None:
    logger, stream = capture("test.json.extra")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("bridge failed", extra={"call_sid": "CA" + "2" * 32})
    line = orjson.loads(stream.getvalue())
    assert line["call_sid"] == "CA" + "2" * 32
    assert "ValueError: boom" in line["exc"]
