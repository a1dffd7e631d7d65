"""One Voice Live WebSocket session: client event dispatch, input buffer + VAD, conversation, responses.

Only this module speaks the session protocol. Sends are serialized by a lock (the response task and the
receive loop both send); every outgoing event gets an ``event_id``. While the session is stalled, outgoing
events are held in order (``held.py``) instead of sent. Bad client input gets an ``error`` event and the
session carries on, as the service does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from emulators.voicelive.audio import decode_input
from emulators.voicelive.config import VoiceLiveEmulatorConfig
from emulators.voicelive.faults import ErrorSpec, Faults
from emulators.voicelive.held import HeldEvents
from emulators.voicelive.records import SessionRecord
from emulators.voicelive.responses import (
    CHARS_PER_TEXT_TOKEN,
    INPUT_AUDIO_MS_PER_TOKEN,
    FunctionCallRun,
    PlannedCall,
    ResponsePlan,
    ResponseRun,
)
from emulators.voicelive.script import (
    TOOL_FALLBACK_TEXT,
    ScriptedCall,
    all_offered,
    fill_tool_output,
    forced_call,
    offered_functions,
    parse_entry,
    said_exactly,
)
from emulators.voicelive.session import (
    InvalidRequest,
    default_session,
    input_sample_rate,
    merge_session,
    validate_response_options,
)
from emulators.voicelive.vad import EnergyVad, SpeechStarted, SpeechStopped

logger = logging.getLogger("emulators.voicelive")

# voice-live.md 1.6: the client may put "up to a maximum of 15 MiB" of audio in one append event.
MAX_APPEND_AUDIO_BYTES = 15 * 1024 * 1024
MAX_APPEND_BASE64_CHARS = 4 * math.ceil(MAX_APPEND_AUDIO_BYTES / 3)

STALL_POLL_S = 0.02
"""How often held events check whether ``faults.stall`` was cleared."""

ItemTypes = ("message", "function_call", "function_call_output")
MessageRoles = ("system", "user", "assistant")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def _voice_key(voice: Any) -> Any:
    """A voice in one spelling: a bare name is the OpenAI voice object (re-sending it is not a change)."""
    if isinstance(voice, str):
        voice = {"type": "openai", "name": voice}
    if isinstance(voice, dict):
        return tuple(sorted((str(k), repr(v)) for k, v in voice.items()))
    return repr(voice)


def _required_string(item: dict[str, Any], key: str) -> str:
    """``item[key]``, which must be a string (the service's missing/invalid type errors otherwise)."""
    value = item.get(key)
    if value is None:
        raise InvalidRequest(
            "missing_required_parameter", f"Missing required parameter: 'item.{key}'.", f"item.{key}"
        )
    if not isinstance(value, str):
        raise InvalidRequest(
            "invalid_type", f"Invalid type for 'item.{key}': expected a string.", f"item.{key}"
        )
    return value


def _append_too_large() -> InvalidRequest:
    return InvalidRequest(
        "invalid_value", "Invalid 'audio': an append event carries at most 15 MiB of audio.", "audio"
    )


class RealtimeConnection:
    """Serves one accepted WebSocket until either side closes it."""

    def __init__(
        self,
        websocket: WebSocket,
        *,
        config: VoiceLiveEmulatorConfig,
        faults: Faults,
        record: SessionRecord,
        abort_transport: Callable[[], bool],
    ) -> None:
        self.ws = websocket
        self.config = config
        self.faults = faults
        self.record = record
        self._abort_transport = abort_transport
        self._replies = itertools.count()  # each session starts at the top of the script
        self.session = default_session(
            session_id=record.session_id, model=record.model, api_version=record.api_version
        )
        self.session["expires_at"] = int(time.time()) + 1800
        self.record.session = self.session
        self.conversation_id = new_id("conv")
        self.items: dict[str, dict[str, Any]] = {}
        self.runs_by_item: dict[str, ResponseRun] = {}
        self.truncated_ms: dict[str, int] = {}
        self.active: ResponseRun | None = None
        self._response_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._confirming: asyncio.Task[None] | None = None
        """The latest delayed ``session.updated`` (the next one waits for it, to keep their order)."""
        self._send_lock = asyncio.Lock()
        self._held = HeldEvents(config.max_held_events, record)
        self._releasing: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.stalled = False
        self.opened_monotonic = time.monotonic()
        # input audio
        self.appended_samples = 0
        self.buffer_start_ms = 0
        self.speech_item_id: str | None = None
        self.vad: EnergyVad | None = None
        self._user_turns = 0
        self._rebuild_vad()

    # ------------------------------------------------------------------ time
    @property
    def appended_ms(self) -> int:
        return self.appended_samples * 1000 // input_sample_rate(self.session)

    # ------------------------------------------------------------------ sending
    async def send(self, event: dict[str, Any]) -> None:
        """Send ``event`` now or, while the session is stalled, hold it to send in order when the stall lifts.

        The frame is serialized here, when the event is produced: a held event shows what the service had
        produced then, even if the item it describes changes before the stall lifts.
        """
        if self._closed.is_set():
            return
        payload = {"event_id": new_id("event"), **event}
        if event["type"] == "response.done":  # record before the client can observe it
            self.record.responses[event["response"]["id"]] = event["response"]["status"]
        elif event["type"] == "response.output_item.done" and event["item"].get("type") == "function_call":
            item = event["item"]
            self.record.function_calls_emitted += 1
            self.record.function_calls.append(
                {k: item[k] for k in ("id", "name", "call_id", "arguments", "status")}
            )
        text = orjson.dumps(payload).decode()
        async with self._send_lock:  # FIFO: events go out (or are held) in the order they were produced
            if self._closed.is_set():
                return
            if self.stalled or self.faults.stall or self._held:
                self._held.hold(event["type"], text)
                self._release_when_unstalled()
                return
            await self._write(event["type"], text)

    async def _write(self, kind: str, text: str) -> None:
        """One frame to the client; the caller holds the send lock."""
        self.record.server_events.append(kind)  # before the client can observe it
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed.set()

    def _release_when_unstalled(self) -> None:
        """Make sure a task will deliver the held events once ``faults.stall`` is cleared."""
        if self.stalled or (self._releasing is not None and not self._releasing.done()):
            return
        self._releasing = asyncio.create_task(self._release_held())
        self._tasks.add(self._releasing)
        self._releasing.add_done_callback(self._tasks.discard)

    async def _release_held(self) -> None:
        """Deliver held events, oldest first, while ``faults.stall`` is clear.

        ``stall`` can be cleared from another thread (a test) or over ``POST /_emulator/faults``, so it is
        polled, as the watchdog polls ``expire_after_s``. A permanent stall (``stall_forever``) never lifts.
        """
        while self._held and not self.stalled and not self._closed.is_set():
            if self.faults.stall:
                await asyncio.sleep(STALL_POLL_S)
                continue
            async with self._send_lock:
                while self._held and not (self.faults.stall or self.stalled or self._closed.is_set()):
                    await self._write(*self._held.pop())

    async def send_error(self, error: dict[str, Any], *, client_event_id: str | None = None) -> None:
        body = {"type": "invalid_request_error", "code": None, "message": "", "param": None, **error}
        body["event_id"] = client_event_id if client_event_id is not None else body.get("event_id")
        self.record.errors_sent.append(body)
        await self.send({"type": "error", "error": body})

    async def _invalid(self, problem: InvalidRequest, client_event_id: str | None) -> None:
        await self.send_error(
            {
                "type": "invalid_request_error",
                "code": problem.code,
                "message": problem.message,
                "param": problem.param,
            },
            client_event_id=client_event_id,
        )

    def add_item(self, item: dict[str, Any]) -> str | None:
        item_id = item["id"]
        if item_id in self.items:
            keys = list(self.items)
            index = keys.index(item_id)
            self.items[item_id] = item
            return keys[index - 1] if index else None
        previous = next(reversed(self.items), None) if self.items else None
        self.items[item_id] = item
        return previous

    async def stall_forever(self) -> None:
        """Hang this session for good (``stall_after_deltas``): from now on every event is held, never sent.

        Only the session's end releases the caller; clearing ``faults.stall`` does not resume it.
        """
        self.stalled = True
        await self._closed.wait()

    async def close(self, code: int, *, abrupt: bool) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.record.close_code = None if abrupt else code
        if abrupt and self._abort_transport():
            return
        with contextlib.suppress(Exception):
            await self.ws.close(code)

    # ------------------------------------------------------------------ lifecycle
    async def serve(self) -> None:
        watchdog = asyncio.create_task(self._watchdog())
        try:
            await self.send({"type": "session.created", "session": self.session})
            start_error = self.faults.error_at_session_start
            if start_error is not None:
                await self.send_error(start_error.to_dict())
            await self._receive_loop()
        finally:
            self._closed.set()
            watchdog.cancel()
            for task in [*self._tasks, *([self._response_task] if self._response_task else [])]:
                task.cancel()
            self._abandon_active()
            self._held.discard()
            self.record.closed = True

    def _abandon_active(self) -> None:
        """Finalise a response the session ended under (client gone, stall, expiry).

        No ``response.done`` can reach the client any more, but ``/_emulator/state`` must not show the
        response ``in_progress`` forever; it was cut short, so it is recorded as ``cancelled``.
        """
        run = self.active
        if run is None or not run.active:
            return
        run.status = "cancelled"
        run.status_details = {"type": "cancelled", "reason": "session_closed"}
        self.record.responses[run.plan.response_id] = run.status

    async def _receive_loop(self) -> None:
        while not self._closed.is_set():
            receive = asyncio.ensure_future(self.ws.receive())
            closed = asyncio.ensure_future(self._closed.wait())
            done, _ = await asyncio.wait({receive, closed}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                closed.cancel()
                return
            closed.cancel()
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                self.record.close_code = self.record.close_code or message.get("code")
                self._closed.set()
                return
            text = message.get("text")
            if text is None:
                await self.send_error(
                    {
                        "code": "invalid_json",
                        "message": "Binary frames are not supported; send JSON text events.",
                    }
                )
                continue
            await self._handle_text(text)

    async def _watchdog(self) -> None:
        """Expire the session after ``faults.expire_after_s`` (checked live, so it can be set mid-session)."""
        while not self._closed.is_set():
            expire = self.faults.expire_after_s
            if expire is not None and time.monotonic() - self.opened_monotonic >= expire:
                minutes = expire / 60.0
                await self.send_error(
                    {
                        "code": "session_expired",
                        "message": f"Your session hit the maximum duration of {minutes:g} minutes.",
                    }
                )
                await self.close(1001, abrupt=False)
                self.record.close_reason = "session_expired"
                return
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ dispatch
    async def _handle_text(self, text: str) -> None:
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.send_error(
                {"code": "invalid_json", "message": "The server could not parse the message as JSON."}
            )
            return
        if not isinstance(event, dict):
            await self.send_error({"code": "invalid_json", "message": "Each event must be a JSON object."})
            return
        raw_event_id = event.get("event_id")
        client_event_id = raw_event_id if isinstance(raw_event_id, str) else None
        kind = event.get("type")
        if not isinstance(kind, str):
            await self.send_error(
                {
                    "code": "missing_required_parameter",
                    "message": "Missing required parameter: 'type'.",
                    "param": "type",
                },
                client_event_id=client_event_id,
            )
            return
        self._note_client_event(kind, event)
        handler = self._handlers().get(kind)
        if handler is None:
            await self.send_error(
                {
                    "code": "invalid_value",
                    "message": f"Invalid value: '{kind}'. Supported values are: "
                    + ", ".join(f"'{name}'" for name in self._handlers())
                    + ".",
                    "param": "type",
                },
                client_event_id=client_event_id,
            )
            return
        try:
            await handler(event, client_event_id)
        except InvalidRequest as problem:
            await self._invalid(problem, client_event_id)
        except Exception:
            # Safety net: an emulator bug must not look like a service that drops the socket on bad input;
            # the service answers with a recoverable server_error and keeps the session.
            logger.exception("voicelive emulator: %s handler crashed", kind)
            await self.send_error({**ErrorSpec().to_dict(), "param": None}, client_event_id=client_event_id)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any], str | None], Awaitable[None]]]:
        return {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.delete": self._item_delete,
            "conversation.item.truncate": self._item_truncate,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    def _note_client_event(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "input_audio_buffer.append":
            self.record.append_count += 1
            return
        self.record.client_events.append(kind)
        self.record.last_client_event[kind] = event

    # ------------------------------------------------------------------ session
    async def _session_update(self, event: dict[str, Any], client_event_id: str | None) -> None:
        merged = merge_session(self.session, event.get("session"), api_version=self.record.api_version)
        if _voice_key(merged["voice"]) != _voice_key(self.session["voice"]) and self._audio_produced():
            # voice-live.md 1.3: "Voice can't be changed after the model has produced audio". The code is
            # OpenAI Realtime's; Voice Live's own is not documented.
            raise InvalidRequest(
                "cannot_update_voice",
                "Cannot update the session's voice after the model has produced audio.",
                "session.voice",
            )
        rate_changed = input_sample_rate(merged) != input_sample_rate(self.session)
        if rate_changed:  # keep appended-audio time continuous across a format change
            position = self.appended_ms
            self.appended_samples = position * input_sample_rate(merged) // 1000
        self.session = merged
        self.record.session = merged
        self._rebuild_vad()
        faults = self.faults.snapshot()
        if faults.drop_session_updated:
            return
        await self._confirm_session(merged, faults.session_updated_delay_ms / 1000.0)

    async def _confirm_session(self, session: dict[str, Any], delay_s: float) -> None:
        """Send ``session.updated`` for ``session``, ``delay_s`` late when the service is slow to confirm.

        Only the confirmation waits, on its own task: the service keeps reading client events meanwhile, so
        the receive loop must not sleep. Confirmations keep the order of their updates (one waits for any
        earlier one still pending). Nothing documents an order between a late ``session.updated`` and the
        replies to later client events (voice-live.md 1.3, 1.10), so those may overtake it.
        ``session`` is never mutated afterwards (``merge_session`` returns a deep copy).
        """
        previous = self._confirming
        if delay_s <= 0 and (previous is None or previous.done()):
            await self.send({"type": "session.updated", "session": session})
            return
        due = asyncio.get_running_loop().time() + delay_s

        async def confirm_later() -> None:
            if previous is not None:
                await asyncio.wait({previous})  # its outcome is its own; our own cancellation still ends us
            await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
            await self.send({"type": "session.updated", "session": session})

        task = asyncio.create_task(confirm_later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._confirming = task

    def _audio_produced(self) -> bool:
        return any(run.audio_ms_sent > 0 for run in self.runs_by_item.values())

    def _rebuild_vad(self) -> None:
        td = self.session.get("turn_detection")
        if not td:
            self.vad = None
            return
        speaking = self.vad.speaking if self.vad else False
        self.vad = EnergyVad(
            sample_rate=input_sample_rate(self.session),
            threshold=float(td.get("threshold", 0.5)),
            prefix_padding_ms=int(td.get("prefix_padding_ms", 300)),
            silence_duration_ms=int(td.get("silence_duration_ms", 500)),
            speech_duration_ms=int(td.get("speech_duration_ms", 0)),
            frame_ms=self.config.vad_frame_ms,
            start_ms=self.appended_ms,
        )
        self.vad.speaking = speaking

    # ------------------------------------------------------------------ input audio
    async def _append(self, event: dict[str, Any], client_event_id: str | None) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise InvalidRequest(
                "missing_required_parameter", "Missing required parameter: 'audio'.", "audio"
            )
        if len(audio) > MAX_APPEND_BASE64_CHARS:
            raise _append_too_large()
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                "invalid_value", "Invalid 'audio': expected base64-encoded audio.", "audio"
            ) from None
        if len(data) > MAX_APPEND_AUDIO_BYTES:
            raise _append_too_large()
        self.record.last_client_event["input_audio_buffer.append"] = {
            "type": "input_audio_buffer.append",
            "audio_bytes": len(data),
        }
        pcm = decode_input(data, self.session["input_audio_format"])
        self.appended_samples += int(pcm.size)
        self.record.appended_audio_ms = self.appended_ms
        if self.vad is None:
            return
        for change in self.vad.feed(pcm):
            if isinstance(change, SpeechStarted):
                await self._speech_started(change.audio_start_ms)
            elif isinstance(change, SpeechStopped):
                await self._speech_stopped(change.audio_end_ms)

    async def _speech_started(self, audio_start_ms: int) -> None:
        self.speech_item_id = new_id("item")
        await self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": self.speech_item_id,
            }
        )
        td = self.session.get("turn_detection") or {}
        if self.active is not None and self.active.active and td.get("interrupt_response", True):
            await self._cancel_active("turn_detected")

    async def _speech_stopped(self, audio_end_ms: int) -> None:
        item_id = self.speech_item_id or new_id("item")
        self.speech_item_id = None
        await self.send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms, "item_id": item_id}
        )
        await self._commit_buffer(item_id, audio_end_ms)
        td = self.session.get("turn_detection") or {}
        if td.get("create_response", True):
            self._start_response_when_idle()

    async def _commit_buffer(self, item_id: str, end_ms: int) -> None:
        duration_ms = max(0, end_ms - self.buffer_start_ms)
        self.buffer_start_ms = end_ms
        self._user_turns += 1
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            # voice-live.md 1.8: user audio content is {"type":"input_audio","audio":null,"transcript":…}
            "content": [{"type": "input_audio", "audio": None, "transcript": None}],
            "_audio_ms": duration_ms,
        }
        previous = self.add_item(item)
        public = {k: v for k, v in item.items() if not k.startswith("_")}
        await self.send(
            {"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id}
        )
        await self.send({"type": "conversation.item.created", "previous_item_id": previous, "item": public})
        if self.session.get("input_audio_transcription"):
            scripts = self.config.user_transcripts or ("",)
            transcript = scripts[(self._user_turns - 1) % len(scripts)]
            item["content"] = [{"type": "input_audio", "audio": None, "transcript": transcript}]
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": transcript,
                }
            )

    async def _commit(self, event: dict[str, Any], client_event_id: str | None) -> None:
        end_ms = self.appended_ms
        if end_ms - self.buffer_start_ms <= 0:
            raise InvalidRequest(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: the buffer is empty.",
                None,
            )
        item_id = self.speech_item_id or new_id("item")
        self.speech_item_id = None
        if self.vad is not None:
            self.vad.reset(end_ms)
        await self._commit_buffer(item_id, end_ms)

    async def _clear(self, event: dict[str, Any], client_event_id: str | None) -> None:
        self.buffer_start_ms = self.appended_ms
        self.speech_item_id = None
        if self.vad is not None:
            self.vad.reset(self.appended_ms)
        await self.send({"type": "input_audio_buffer.cleared"})

    # ------------------------------------------------------------------ conversation items
    async def _item_create(self, event: dict[str, Any], client_event_id: str | None) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            raise InvalidRequest("missing_required_parameter", "Missing required parameter: 'item'.", "item")
        kind = item.get("type")
        if kind not in ItemTypes:
            raise InvalidRequest(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: "
                + ", ".join(f"'{t}'" for t in ItemTypes)
                + ".",
                "item.type",
            )
        previous_id = event.get("previous_item_id")
        if previous_id is not None and not isinstance(previous_id, str):
            raise InvalidRequest(
                "invalid_type", "Invalid type for 'previous_item_id': expected a string.", "previous_item_id"
            )
        if item.get("id") is not None and not isinstance(item.get("id"), str):
            raise InvalidRequest("invalid_type", "Invalid type for 'item.id': expected a string.", "item.id")
        if previous_id is not None and previous_id not in self.items:
            raise InvalidRequest(
                "item_not_found", f"Item with item_id '{previous_id}' not found.", "previous_item_id"
            )
        item_id = item.get("id") or new_id("item")
        if item_id in self.items:
            raise InvalidRequest(
                "item_already_exists", f"Item with id '{item_id}' already exists.", "item.id"
            )
        stored: dict[str, Any] = {"id": item_id, "object": "realtime.item", "status": "completed", **item}
        stored["id"] = item_id
        if kind == "message":
            if item.get("role") not in MessageRoles:
                raise InvalidRequest("invalid_value", "Invalid 'item.role'.", "item.role")
            content = item.get("content")
            if not isinstance(content, list):
                raise InvalidRequest(
                    "missing_required_parameter",
                    "Missing required parameter: 'item.content'.",
                    "item.content",
                )
            stored["content"] = [
                {k: v for k, v in part.items() if k != "audio"} if isinstance(part, dict) else part
                for part in content
            ]
        elif kind == "function_call":
            for key in ("name", "call_id", "arguments"):
                _required_string(item, key)
        else:  # function_call_output
            call_id = _required_string(item, "call_id")
            _required_string(item, "output")
            if not any(
                known.get("type") == "function_call" and known.get("call_id") == call_id
                for known in self.items.values()
            ):
                # The service checks that a function_call with this call_id is in the conversation (OpenAI's
                # realtime reference says so); its exact error is not documented. GUESS: code, param and the
                # message (borrowed from OpenAI's Responses API, same backend family).
                raise InvalidRequest(
                    "invalid_value",
                    f"No tool call found for function call output with call_id {call_id}.",
                    "item.call_id",
                )
        previous = self.add_item(stored) if previous_id is None else self._insert_after(previous_id, stored)
        self._record_function_item(stored)
        await self.send({"type": "conversation.item.created", "previous_item_id": previous, "item": stored})

    def _record_function_item(self, item: dict[str, Any]) -> None:
        """Note a client's function call or function output: what reached the "model"."""
        if item["type"] == "function_call_output":
            self.record.function_outputs_received += 1
            self.record.function_outputs.append(
                {"item_id": item["id"], "call_id": item["call_id"], "output": item["output"]}
            )
        elif item["type"] == "function_call":
            self.record.client_function_calls.append(
                {k: item[k] for k in ("id", "name", "call_id", "arguments")}
            )

    def _newest_function_output(self) -> str:
        """The ``output`` of the conversation's last ``function_call_output`` item ("" if none)."""
        for item in reversed(self.items.values()):
            if item.get("type") == "function_call_output":
                return str(item.get("output", ""))
        return ""

    def _insert_after(self, previous_id: str, item: dict[str, Any]) -> str:
        ordered = list(self.items.items())
        index = [key for key, _ in ordered].index(previous_id)
        ordered.insert(index + 1, (item["id"], item))
        self.items = dict(ordered)
        return previous_id

    def _public(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if not k.startswith("_")}

    def _known_item(self, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise InvalidRequest(
                "missing_required_parameter", "Missing required parameter: 'item_id'.", "item_id"
            )
        item = self.items.get(item_id)
        if item is None:
            raise InvalidRequest("item_not_found", f"Item with item_id '{item_id}' not found.", "item_id")
        return item_id, item

    async def _item_retrieve(self, event: dict[str, Any], client_event_id: str | None) -> None:
        _, item = self._known_item(event)
        await self.send({"type": "conversation.item.retrieved", "item": self._public(item)})

    async def _item_delete(self, event: dict[str, Any], client_event_id: str | None) -> None:
        item_id, _ = self._known_item(event)
        del self.items[item_id]
        await self.send({"type": "conversation.item.deleted", "item_id": item_id})

    async def _item_truncate(self, event: dict[str, Any], client_event_id: str | None) -> None:
        item_id, item = self._known_item(event)
        content_index = event.get("content_index", 0)
        audio_end_ms = event.get("audio_end_ms")
        if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int) or audio_end_ms < 0:
            raise InvalidRequest(
                "invalid_value", "Invalid 'audio_end_ms': expected a non-negative integer.", "audio_end_ms"
            )
        run = self.runs_by_item.get(item_id)
        if item.get("role") != "assistant" or run is None or not run.audio:
            raise InvalidRequest(
                "invalid_value", "Only model output audio messages can be truncated.", "item_id"
            )
        if content_index != 0:
            raise InvalidRequest(
                "invalid_value", f"Invalid 'content_index': {content_index}.", "content_index"
            )
        available = self.truncated_ms.get(item_id, run.audio_ms_sent)
        if audio_end_ms > available:
            raise InvalidRequest(
                "invalid_value",
                f"Audio content of {available}ms is already shorter than {audio_end_ms}ms.",
                "audio_end_ms",
            )
        self.truncated_ms[item_id] = audio_end_ms
        for part in item.get("content", []):
            if isinstance(part, dict) and part.get("type") == "audio":
                part["transcript"] = None  # the service drops the transcript of a truncated item
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
        )

    # ------------------------------------------------------------------ responses
    async def _response_create(self, event: dict[str, Any], client_event_id: str | None) -> None:
        if self.active is not None and self.active.active:
            raise InvalidRequest(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.active.plan.response_id}. "
                "Wait until the response is finished before creating a new one.",
                None,
            )
        options = validate_response_options(event.get("response"), self.session)
        self._start_response(options)

    async def _response_cancel(self, event: dict[str, Any], client_event_id: str | None) -> None:
        wanted = event.get("response_id")
        if self.active is None or not self.active.active:
            raise InvalidRequest(
                "response_cancel_not_active", "Cancellation failed: no active response found.", None
            )
        if wanted is not None and wanted != self.active.plan.response_id:
            raise InvalidRequest(
                "response_cancel_not_active",
                f"Cancellation failed: response '{wanted}' is not active.",
                "response_id",
            )
        await self._cancel_active("client_cancelled")

    async def _cancel_active(self, reason: str) -> None:
        run, task = self.active, self._response_task
        if run is None or task is None:
            return
        run.cancel(reason)
        if not self.stalled:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    def _start_response_when_idle(self) -> None:
        previous = self._response_task

        async def later() -> None:
            if previous is not None and not previous.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await previous
            self._start_response({})

        if previous is None or previous.done():
            self._start_response({})
        else:
            task = asyncio.create_task(later())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _start_response(self, options: dict[str, Any]) -> None:
        if self._closed.is_set():
            return
        words = said_exactly(options.get("instructions")) if self.config.follow_say_exactly else None
        entry: str | tuple[ScriptedCall, ...]
        if words is not None:
            reply_index, entry = 0, words
        else:
            replies = self.config.replies or ("",)
            reply_index = next(self._replies) % len(replies)
            entry = parse_entry(replies[reply_index])
        calls: tuple[PlannedCall, ...] = ()
        tools = options.get("tools", self.session.get("tools"))
        tool_choice = options.get("tool_choice", self.session.get("tool_choice"))
        if isinstance(entry, str) and (forced := forced_call(tools, tool_choice)) is not None:
            entry = (forced,)
        if isinstance(entry, str):
            text = fill_tool_output(entry, self._newest_function_output())
        else:
            offered = offered_functions(tools, tool_choice)
            if all_offered(entry, offered):
                text = ""
                calls = tuple(
                    PlannedCall(new_id("item"), new_id("call"), call.name, call.arguments) for call in entry
                )
            else:
                text = TOOL_FALLBACK_TEXT  # the emulator's choice; see script.py
        input_audio_ms = sum(int(item.get("_audio_ms", 0)) for item in self.items.values())
        instructions = str(options.get("instructions") or self.session.get("instructions") or "")
        plan = ResponsePlan(
            response_id=new_id("resp"),
            item_id=calls[0].item_id if calls else new_id("item"),
            conversation_id=self.conversation_id,
            text=text,
            output_audio_format=options.get("output_audio_format", self.session["output_audio_format"]),
            modalities=list(options.get("modalities", self.session["modalities"])),
            voice=options.get("voice", self.session["voice"]),
            temperature=float(options.get("temperature", self.session["temperature"])),
            max_output_tokens=options.get(
                "max_response_output_tokens", self.session["max_response_output_tokens"]
            ),
            seed=reply_index,
            input_text_tokens=math.ceil(len(instructions) / CHARS_PER_TEXT_TOKEN),
            input_audio_tokens=math.ceil(input_audio_ms / INPUT_AUDIO_MS_PER_TOKEN),
            metadata=options.get("metadata"),
            calls=calls,
        )
        run = (FunctionCallRun if calls else ResponseRun)(
            plan=plan,
            host=self,
            faults=self.faults,
            chunk_ms=self.config.chunk_ms,
            ms_per_char=self.config.ms_per_char,
        )
        self.active = run
        self.runs_by_item[plan.item_id] = run
        self.record.responses[plan.response_id] = "in_progress"

        async def drive() -> None:
            try:
                await run.run()
            except Exception:
                logger.exception("voicelive emulator: response %s crashed", plan.response_id)
                if run.active:
                    run.status = "failed"
            finally:
                self.record.responses[plan.response_id] = run.status

        self._response_task = asyncio.create_task(drive())
