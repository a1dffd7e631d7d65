"""One model response: the documented event sequence, scripted text, synthesized audio, faults.

A ``ResponseRun`` emits ``response.created`` … ``response.done`` through its ``ResponseHost`` (the
connection). Cancelling (client ``response.cancel`` or server-side barge-in) is cooperative: ``cancel()``
wakes the run from whatever wait it is in and the run itself finishes the sequence with status
``cancelled``, so ``response.done`` always comes last and exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from emulators.voicelive.audio import chunk_bytes, duration_ms_of, synthesize
from emulators.voicelive.faults import ErrorSpec, Faults

ARGUMENT_CHARS_PER_DELTA = 8
"""Function-call arguments stream in pieces this long (the model streams them token by token)."""
INPUT_AUDIO_MS_PER_TOKEN = 100  # guess: the service does not document its audio token rate
OUTPUT_AUDIO_MS_PER_TOKEN = 50
CHARS_PER_TEXT_TOKEN = 4


def billed_output_tokens(text_chars: int, audio_ms: int) -> tuple[int, int]:
    """(text tokens, audio tokens) billed for a response's output so far."""
    return math.ceil(text_chars / CHARS_PER_TEXT_TOKEN), math.ceil(audio_ms / OUTPUT_AUDIO_MS_PER_TOKEN)


class ResponseHost(Protocol):
    """What a response needs from its connection."""

    async def send(self, event: dict[str, Any]) -> None: ...

    async def send_error(self, error: dict[str, Any], *, client_event_id: str | None = None) -> None: ...

    def add_item(self, item: dict[str, Any]) -> str | None:
        """Append ``item`` to the conversation; returns the previous item's id."""
        ...

    async def stall_forever(self) -> None: ...

    async def close(self, code: int, *, abrupt: bool) -> None: ...


@dataclass(frozen=True)
class PlannedCall:
    """One scripted function call of a response, with the ids it goes out under."""

    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass
class ResponsePlan:
    """Everything decided when the response is created."""

    response_id: str
    item_id: str
    conversation_id: str
    text: str
    output_audio_format: str
    modalities: list[str]
    voice: Any
    temperature: float
    max_output_tokens: Any
    seed: int
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    metadata: dict[str, Any] | None = None
    calls: tuple[PlannedCall, ...] = ()
    """Function calls to make instead of speaking ``text`` (run by ``FunctionCallRun``)."""


@dataclass
class ResponseRun:
    plan: ResponsePlan
    host: ResponseHost
    faults: Faults
    chunk_ms: int
    ms_per_char: int
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    audio_ms_sent: int = 0
    audio_bytes_sent: int = 0
    deltas_sent: int = 0
    transcript_sent: str = ""
    _cancel_reason: str | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def audio(self) -> bool:
        return "audio" in self.plan.modalities

    @property
    def active(self) -> bool:
        return self.status == "in_progress"

    def cancel(self, reason: str) -> None:
        """Ask the run to stop (``client_cancelled`` or ``turn_detected``); it sends the closing events."""
        if self._cancel_reason is None and self.active:
            self._cancel_reason = reason
            self._wake.set()

    # ------------------------------------------------------------------
    def _response_object(self, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        plan = self.plan
        return {
            "id": plan.response_id,
            "object": "realtime.response",
            "status": self.status,
            "status_details": self.status_details,
            "output": output,
            "usage": usage,
            "conversation_id": plan.conversation_id,
            "voice": plan.voice,
            "modalities": plan.modalities,
            "output_audio_format": plan.output_audio_format,
            "temperature": plan.temperature,
            "max_output_tokens": plan.max_output_tokens,
            "metadata": plan.metadata,
        }

    def _item(self, status: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if status != "in_progress":
            content = [self._part()]
        return {
            "id": self.plan.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def _part(self) -> dict[str, Any]:
        if self.audio:
            return {"type": "audio", "transcript": self.transcript_sent}
        return {"type": "text", "text": self.transcript_sent}

    def _ids(self) -> dict[str, Any]:
        return {
            "response_id": self.plan.response_id,
            "item_id": self.plan.item_id,
            "output_index": 0,
            "content_index": 0,
        }

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless cancelled first; returns True when cancelled."""
        if self._cancel_reason is not None:
            return True
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        else:
            await asyncio.sleep(0)
        return self._cancel_reason is not None

    # ------------------------------------------------------------------
    async def _start(self) -> None:
        """``response.created`` and, as the doc places it "at the beginning of a response", the rate limits."""
        await self.host.send({"type": "response.created", "response": self._response_object([], None)})
        await self.host.send(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0},
                    {"name": "tokens", "limit": 400_000, "remaining": 399_000, "reset_seconds": 60.0},
                ],
            }
        )

    async def _settle(self, failure: ErrorSpec | None, out_of_tokens: bool) -> None:
        """Set the final status (and send the failure's ``error`` event) once the output stopped."""
        if failure is not None:
            error = failure.to_dict() | {"param": None, "event_id": None}
            await self.host.send_error(error)
            self.status = "failed"
            self.status_details = {"type": "failed", "error": error}
        elif self._cancel_reason is not None:
            self.status = "cancelled"
            self.status_details = {"type": "cancelled", "reason": self._cancel_reason}
        elif out_of_tokens:
            self.status = "incomplete"
            self.status_details = {"type": "incomplete", "reason": "max_output_tokens"}
        else:
            self.status = "completed"

    async def run(self) -> None:
        plan = self.plan
        host = self.host
        started = time.monotonic()
        await self._start()
        in_progress = self._item("in_progress")
        await host.send(
            {
                "type": "response.output_item.added",
                "response_id": plan.response_id,
                "output_index": 0,
                "item": in_progress,
            }
        )
        previous = host.add_item(self._item("in_progress"))
        await host.send(
            {"type": "conversation.item.created", "previous_item_id": previous, "item": in_progress}
        )
        empty_part: dict[str, Any] = (
            {"type": "audio", "transcript": ""} if self.audio else {"type": "text", "text": ""}
        )
        await host.send({"type": "response.content_part.added", **self._ids(), "part": empty_part})

        failure: ErrorSpec | None = None
        duration_ms = max(self.chunk_ms, len(plan.text) * self.ms_per_char)
        chunks = max(1, math.ceil(duration_ms / self.chunk_ms))
        words = plan.text.split(" ")
        audio = synthesize(duration_ms, plan.output_audio_format, seed=plan.seed) if self.audio else b""
        step = chunk_bytes(plan.output_audio_format, self.chunk_ms)

        elapsed = time.monotonic() - started  # synthesis time counts toward the first-audio latency
        cancelled = await self._wait(self.faults.first_audio_ms / 1000.0 - elapsed)
        index = 0
        out_of_tokens = False
        while not cancelled and index < chunks:
            faults = self.faults.snapshot()
            if await self._apply_delta_faults(faults):
                return
            if faults.error_after_deltas is not None and self.deltas_sent >= faults.error_after_deltas:
                failure = faults.mid_response_error
                break
            words_before = len(words) * index // chunks
            words_after = len(words) * (index + 1) // chunks
            text = " ".join(words[words_before:words_after])
            if words_before and words_after > words_before:  # keeps a double space at a chunk edge
                text = " " + text
            chunk = audio[index * step : (index + 1) * step]
            sent_after = duration_ms_of(plan.output_audio_format, self.audio_bytes_sent + len(chunk))
            if self._exceeds_max_output_tokens(text, sent_after - self.audio_ms_sent):
                out_of_tokens = True
                break
            if self.audio:
                await host.send(
                    {
                        "type": "response.audio.delta",
                        **self._ids(),
                        "delta": base64.b64encode(chunk).decode("ascii"),
                    }
                )
                self.audio_bytes_sent += len(chunk)
                self.audio_ms_sent = sent_after
                self.deltas_sent += 1
                if text:
                    await host.send({"type": "response.audio_transcript.delta", **self._ids(), "delta": text})
            else:
                self.deltas_sent += 1
                await host.send({"type": "response.text.delta", **self._ids(), "delta": text})
            self.transcript_sent += text
            index += 1
            if index < chunks:
                cancelled = await self._wait(faults.delta_interval_s(self.chunk_ms))

        await self._settle(failure, out_of_tokens)
        await self._finish()

    def _exceeds_max_output_tokens(self, text: str, audio_ms: int) -> bool:
        """Would sending this delta take the output past ``max_response_output_tokens``?

        The response stops before it instead, so ``usage.output_tokens`` never exceeds the limit.
        """
        limit = self.plan.max_output_tokens
        if isinstance(limit, bool) or not isinstance(limit, int):
            return False  # "inf"
        text_tokens, audio_tokens = billed_output_tokens(
            len(self.transcript_sent) + len(text), self.audio_ms_sent + (audio_ms if self.audio else 0)
        )
        return text_tokens + audio_tokens > limit

    async def _apply_delta_faults(self, faults: Faults) -> bool:
        """Stall or close before the next delta when the configured delta count is reached."""
        if faults.stall_after_deltas is not None and self.deltas_sent >= faults.stall_after_deltas:
            await self.host.stall_forever()
            return True
        if faults.close_after_deltas is not None and self.deltas_sent >= faults.close_after_deltas:
            self.status = "failed"
            await self.host.close(faults.close_code, abrupt=faults.close_abruptly)
            return True
        return False

    async def _finish(self) -> None:
        host = self.host
        item_status = "completed" if self.status == "completed" else "incomplete"
        if self.audio:
            await host.send({"type": "response.audio.done", **self._ids()})
            await host.send(
                {"type": "response.audio_transcript.done", **self._ids(), "transcript": self.transcript_sent}
            )
        else:
            await host.send({"type": "response.text.done", **self._ids(), "text": self.transcript_sent})
        await host.send({"type": "response.content_part.done", **self._ids(), "part": self._part()})
        item = self._item(item_status)
        host.add_item(item)
        await host.send(
            {
                "type": "response.output_item.done",
                "response_id": self.plan.response_id,
                "output_index": 0,
                "item": item,
            }
        )
        await host.send({"type": "response.done", "response": self._response_object([item], self._usage())})

    def _usage(self) -> dict[str, Any]:
        plan = self.plan
        output_text, output_audio = billed_output_tokens(len(self.transcript_sent), self.audio_ms_sent)
        input_tokens = plan.input_text_tokens + plan.input_audio_tokens
        output_tokens = output_text + output_audio
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "cached_tokens": 0,
                "text_tokens": plan.input_text_tokens,
                "audio_tokens": plan.input_audio_tokens,
            },
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        }


@dataclass
class FunctionCallRun(ResponseRun):
    """A response whose output is function calls, no audio or transcript (voice-live.md 1.8, OpenAI beta).

    Per call (``output_index`` 0, 1, …): ``response.output_item.added`` (item ``in_progress``, arguments "")
    → ``conversation.item.created`` → ``response.function_call_arguments.delta``+ →
    ``response.function_call_arguments.done`` → ``response.output_item.done``; then one ``response.done``
    listing the items. Arguments deltas count as deltas for the ``*_after_deltas`` faults and
    ``first_audio_ms`` is the wait before the first one. A cancel or failure mid-call still sends that call's
    ``arguments.done`` and ``output_item.done`` (item ``incomplete``, the arguments sent so far), as the doc
    says they are "also returned when a response is interrupted, incomplete, or canceled"; calls not begun
    are not sent.
    """

    outputs: list[dict[str, Any]] = field(default_factory=list)
    text_chars_sent: int = 0

    @property
    def audio(self) -> bool:
        return False

    @staticmethod
    def _call_item(call: PlannedCall, status: str, arguments: str) -> dict[str, Any]:
        return {
            "id": call.item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": status,
            "name": call.name,
            "call_id": call.call_id,
            "arguments": arguments,
        }

    def _call_ids(self, call: PlannedCall, index: int) -> dict[str, Any]:
        return {
            "response_id": self.plan.response_id,
            "item_id": call.item_id,
            "output_index": index,
            "call_id": call.call_id,
        }

    async def run(self) -> None:
        host = self.host
        started = time.monotonic()
        await self._start()
        failure: ErrorSpec | None = None
        out_of_tokens = False
        for index, call in enumerate(self.plan.calls):
            if index and await self._wait(0):
                break  # cancelled between two calls: the next one is never begun
            added = self._call_item(call, "in_progress", "")
            await host.send(
                {
                    "type": "response.output_item.added",
                    "response_id": self.plan.response_id,
                    "output_index": index,
                    "item": added,
                }
            )
            previous = host.add_item(dict(added))
            await host.send(
                {"type": "conversation.item.created", "previous_item_id": previous, "item": added}
            )
            cancelled = False
            if index == 0:
                elapsed = time.monotonic() - started
                cancelled = await self._wait(self.faults.first_audio_ms / 1000.0 - elapsed)
            pieces = [
                call.arguments[at : at + ARGUMENT_CHARS_PER_DELTA]
                for at in range(0, len(call.arguments), ARGUMENT_CHARS_PER_DELTA)
            ]
            sent = ""
            for number, piece in enumerate(pieces):
                if cancelled:
                    break
                faults = self.faults.snapshot()
                if await self._apply_delta_faults(faults):
                    return
                if faults.error_after_deltas is not None and self.deltas_sent >= faults.error_after_deltas:
                    failure = faults.mid_response_error
                    break
                if self._exceeds_argument_tokens(len(piece)):
                    out_of_tokens = True
                    break
                await host.send(
                    {
                        "type": "response.function_call_arguments.delta",
                        **self._call_ids(call, index),
                        "delta": piece,
                    }
                )
                self.deltas_sent += 1
                self.text_chars_sent += len(piece)
                sent += piece
                if number + 1 < len(pieces):
                    cancelled = await self._wait(faults.delta_interval_s(self.chunk_ms))
            complete = sent == call.arguments
            await self._finish_call(call, index, sent, "completed" if complete else "incomplete")
            if not complete:
                break
        await self._settle(failure, out_of_tokens)
        usage = self._usage()
        await host.send({"type": "response.done", "response": self._response_object(self.outputs, usage)})

    async def _finish_call(self, call: PlannedCall, index: int, arguments: str, status: str) -> None:
        await self.host.send(
            {
                "type": "response.function_call_arguments.done",
                **self._call_ids(call, index),
                "name": call.name,
                "arguments": arguments,
            }
        )
        item = self._call_item(call, status, arguments)
        self.host.add_item(dict(item))
        self.outputs.append(item)
        await self.host.send(
            {
                "type": "response.output_item.done",
                "response_id": self.plan.response_id,
                "output_index": index,
                "item": item,
            }
        )

    def _exceeds_argument_tokens(self, chars: int) -> bool:
        """Would this many more argument characters take the output past ``max_response_output_tokens``?"""
        limit = self.plan.max_output_tokens
        if isinstance(limit, bool) or not isinstance(limit, int):
            return False  # "inf"
        return billed_output_tokens(self.text_chars_sent + chars, 0)[0] > limit

    def _usage(self) -> dict[str, Any]:
        usage = super()._usage()
        text_tokens, _ = billed_output_tokens(self.text_chars_sent, 0)
        usage["output_tokens"] = text_tokens
        usage["total_tokens"] = usage["input_tokens"] + text_tokens
        usage["output_token_details"] = {"text_tokens": text_tokens, "audio_tokens": 0}
        return usage
