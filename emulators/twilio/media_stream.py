"""Twilio's side of a bidirectional Media Stream (``<Connect><Stream>``), as one object per stream.

Wire protocol per Twilio's "WebSocket messages" page (shared/reference/twilio.md §3): a signed upgrade
(``X-Twilio-Signature`` = HMAC-SHA1 over the ``wss://`` URL, no params), ``connected``, ``start`` (with
``customParameters`` from the ``<Parameter>``s), then one ``media`` message per 20 ms of caller audio at real
pace (160 μ-law bytes, ``chunk``/``timestamp``/``sequenceNumber`` as strings), ``stop`` when the call ends or
leaves the stream. Outbound ``media`` is queued and played out on a clock at 8 bytes per millisecond;
``mark`` is echoed when the audio queued before it has played (at once if nothing is queued); ``clear``
drops queued audio and echoes every pending mark. Anything else is Twilio error 31924 (counted, not fatal).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from emulators.twilio.measure import CallerEars

log = logging.getLogger(__name__)

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
SILENCE_FRAME = b"\xff" * FRAME_BYTES


def connected_message() -> dict[str, object]:
    """Twilio's first message on a new stream."""
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start_message(
    *, account_sid: str, stream_sid: str, call_sid: str, parameters: Mapping[str, str]
) -> dict[str, object]:
    """``start``: the stream's metadata, with the ``<Parameter>``s as ``customParameters``."""
    return {
        "event": "start",
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": dict(parameters),
        },
        "streamSid": stream_sid,
    }


def media_message(*, stream_sid: str, chunk: int, timestamp_ms: int, audio: bytes) -> dict[str, object]:
    """One ``media`` message of caller audio (``chunk`` and ``timestamp`` are strings on the wire)."""
    return {
        "event": "media",
        "streamSid": stream_sid,
        "media": {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str(timestamp_ms),
            "payload": base64.b64encode(audio).decode(),
        },
    }


def mark_message(stream_sid: str, name: str) -> dict[str, object]:
    """The echo of a ``mark`` whose audio has played (or was cleared)."""
    return {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}


def stop_message(*, account_sid: str, stream_sid: str, call_sid: str) -> dict[str, object]:
    """``stop``: Twilio leaves the stream (the call ended or moved on)."""
    return {
        "event": "stop",
        "streamSid": stream_sid,
        "stop": {"accountSid": account_sid, "callSid": call_sid},
    }


class StreamRejected(Exception):
    """The upgrade did not return 101 (Twilio error 31920)."""


@dataclass
class StreamStats:
    stream_sid: str
    frames_sent: int = 0
    media_received: int = 0
    bytes_played: int = 0
    marks_received: int = 0
    marks_echoed: int = 0
    clears: int = 0
    protocol_errors: list[str] = field(default_factory=list)  # Twilio 31924 descriptions
    end_reason: str = ""


class Mic:
    """The caller's microphone: speech when loaded, μ-law silence otherwise, one 20 ms frame at a time."""

    def __init__(self) -> None:
        self._audio = b""
        self._offset = 0
        self._done: asyncio.Event | None = None

    def load(self, audio: bytes) -> asyncio.Event:
        self._audio = audio
        self._offset = 0
        self._done = asyncio.Event()
        return self._done

    def next_frame(self) -> tuple[bytes, bool]:
        """(frame, last) — ``last`` is True for the frame that ends the loaded utterance."""
        if self._offset >= len(self._audio):
            return SILENCE_FRAME, False
        frame = self._audio[self._offset : self._offset + FRAME_BYTES]
        self._offset += FRAME_BYTES
        if len(frame) < FRAME_BYTES:
            frame = frame + SILENCE_FRAME[len(frame) :]
        return frame, self._offset >= len(self._audio)

    def finish(self) -> None:
        if self._done is not None:
            self._done.set()

    def abandon(self) -> None:
        self._audio = b""
        self._offset = 0


class MediaStreamSession:
    """One ``<Connect><Stream>`` from upgrade to ``stop``. ``run()`` returns why it ended."""

    def __init__(
        self,
        *,
        connect_url: str,
        signed_url: str,
        signature: str,
        account_sid: str,
        call_sid: str,
        parameters: dict[str, str],
        ears: CallerEars,
        time_scale: float = 1.0,
        open_timeout: float = 10.0,
    ) -> None:
        self.connect_url = connect_url
        self.signed_url = signed_url
        self._signature = signature
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.parameters = parameters
        self.ears = ears
        self.time_scale = time_scale
        self.open_timeout = open_timeout
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.stats = StreamStats(stream_sid=self.stream_sid)
        self.mic = Mic()
        self._ws: ClientConnection | None = None
        self._sequence = 0
        self._send_lock = asyncio.Lock()
        self._queue: deque[tuple[bytes | None, str | None, float]] = deque()  # (audio, mark, received)
        self._queue_event = asyncio.Event()
        self._clear_event = asyncio.Event()
        self.playing = False
        self.last_audio_end = 0.0
        self._stopped = False
        self.closed_by_server = asyncio.Event()

    # Sending ---------------------------------------------------------------------------------------------
    async def _send(self, message: dict[str, object], *, sequenced: bool = True) -> None:
        ws = self._ws
        if ws is None:
            return
        async with self._send_lock:
            if sequenced:
                self._sequence += 1
                message["sequenceNumber"] = str(self._sequence)
            await ws.send(orjson.dumps(message).decode())

    async def open(self) -> None:
        """Signed upgrade, then ``connected`` and ``start``. Raises :class:`StreamRejected`."""
        try:
            self._ws = await connect(
                self.connect_url,
                additional_headers={"X-Twilio-Signature": self._signature, "User-Agent": "Twilio.TmeWs/1.0"},
                open_timeout=self.open_timeout,
                max_size=2**22,
                ping_interval=None,
            )
        except InvalidStatus as exc:
            raise StreamRejected(f"31920: upgrade answered {exc.response.status_code}") from exc
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise StreamRejected(f"31920: {exc!r}") from exc
        await self._send(connected_message(), sequenced=False)
        await self._send(
            start_message(
                account_sid=self.account_sid,
                stream_sid=self.stream_sid,
                call_sid=self.call_sid,
                parameters=self.parameters,
            )
        )

    async def _send_media(self) -> None:
        """Caller audio at real (scaled) pace on absolute deadlines, so timing does not drift."""
        loop = asyncio.get_running_loop()
        interval = FRAME_MS / 1000.0 * self.time_scale
        deadline = loop.time()
        chunk = 0
        while True:
            frame, last = self.mic.next_frame()
            chunk += 1
            await self._send(
                media_message(
                    stream_sid=self.stream_sid, chunk=chunk, timestamp_ms=(chunk - 1) * FRAME_MS, audio=frame
                )
            )
            self.stats.frames_sent += 1
            deadline += interval
            if last:
                # The utterance ends when its last frame has been spoken (sent at real pace).
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                self.mic.finish()
                continue
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    # Receiving -------------------------------------------------------------------------------------------
    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                self._handle(raw)
        except ConnectionClosed:
            pass
        if not self._stopped:
            self.closed_by_server.set()

    def _handle(self, raw: str | bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.stats.protocol_errors.append("31924: not JSON")
            return
        if not isinstance(message, dict):
            self.stats.protocol_errors.append("31924: not a JSON object")
            return
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            self.stats.protocol_errors.append(f"31924: unexpected event {event!r}")
            return
        if message.get("streamSid") != self.stream_sid:
            self.stats.protocol_errors.append(f"31924: streamSid mismatch on {event}")
            return
        now = self.ears.now()
        if event == "media":
            media = message.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                self.stats.protocol_errors.append("31924: media without payload")
                return
            try:
                audio = base64.b64decode(payload, validate=True)
            except binascii.Error:
                self.stats.protocol_errors.append("31924: payload is not base64")
                return
            self.stats.media_received += 1
            self._queue.append((audio, None, now))
            self._queue_event.set()
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self.stats.protocol_errors.append("31924: mark without name")
                return
            self.stats.marks_received += 1
            self._queue.append((None, name, now))
            self._queue_event.set()
        else:
            self.stats.clears += 1
            pending = [mark for _, mark, _ in self._queue if mark is not None]
            self._queue.clear()
            self._clear_event.set()
            for name in pending:
                self._echo_mark_soon(name)

    def _echo_mark_soon(self, name: str) -> None:
        self.stats.marks_echoed += 1
        task = asyncio.get_running_loop().create_task(self._send(mark_message(self.stream_sid, name)))
        task.add_done_callback(_ignore_closed)

    # Playout ---------------------------------------------------------------------------------------------
    async def _play(self) -> None:
        """Play queued audio on a clock at 8 bytes/ms; echo marks as the playout passes them."""
        play_clock = 0.0
        while True:
            if not self._queue:
                if self.playing:
                    self.playing = False
                    self.last_audio_end = play_clock or self.ears.now()
                    self.ears.audio_stopped(self.last_audio_end)
                self._queue_event.clear()
                await self._queue_event.wait()
                continue
            audio, mark, received = self._queue.popleft()
            if mark is not None:
                self._echo_mark_soon(mark)
                continue
            assert audio is not None
            now = self.ears.now()
            if not self.playing or play_clock < now:
                play_clock = now
            fresh = received >= self.ears.speech_end
            if not self.playing or (fresh and self.ears.waiting_for_reply):
                self.ears.audio_started(play_clock, fresh=fresh, mode="realtime")
            self.playing = True
            duration = len(audio) / 8000.0 * self.time_scale
            play_clock += duration
            self._clear_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clear_event.wait(), timeout=max(0.0, play_clock - now))
            if self._clear_event.is_set():
                cut = self.ears.now()
                played = int((cut - (play_clock - duration)) / self.time_scale * 8000)
                self.stats.bytes_played += max(0, min(len(audio), played))
                play_clock = cut
                self.playing = False
                self.last_audio_end = cut
                self.ears.audio_stopped(cut)
                self._clear_event.clear()
            else:
                self.stats.bytes_played += len(audio)

    @property
    def idle_for(self) -> float:
        """Seconds since the bot's audio last stopped (0 while it plays or has audio queued)."""
        if self.playing or any(audio is not None for audio, _, _ in self._queue):
            return 0.0
        return max(0.0, self.ears.now() - self.last_audio_end) if self.last_audio_end else float("inf")

    # Lifecycle -------------------------------------------------------------------------------------------
    async def speak(self, audio: bytes) -> None:
        """Stream ``audio`` as the caller's voice; returns when its last frame has been sent."""
        done = self.mic.load(audio)
        self.ears.caller_started(self.ears.now())
        await done.wait()

    async def run_until(self, ended: asyncio.Future[str]) -> str:
        """Pump media both ways until ``ended`` resolves or the server closes; returns the end reason."""
        tasks = [
            asyncio.create_task(self._send_media(), name=f"{self.stream_sid}-send"),
            asyncio.create_task(self._receive(), name=f"{self.stream_sid}-recv"),
            asyncio.create_task(self._play(), name=f"{self.stream_sid}-play"),
        ]
        closed: asyncio.Future[Any] = asyncio.ensure_future(self.closed_by_server.wait())
        try:
            done, _ = await asyncio.wait([ended, closed], return_when=asyncio.FIRST_COMPLETED)
            if ended in done and not ended.cancelled() and ended.exception() is None:
                reason = ended.result()
            else:
                reason = "closed_by_server"
        finally:
            closed.cancel()
            # The pumps stop first, and are reaped even if this call is cancelled while closing: left running,
            # the sender kept writing to the closed socket.
            for task in tasks:
                task.cancel()
            try:
                await self.close(send_stop=not self.closed_by_server.is_set())
            finally:
                await asyncio.gather(*tasks, return_exceptions=True)
            if self.playing:
                self.playing = False
                self.ears.audio_stopped(self.ears.now())
        self.stats.end_reason = reason
        return reason

    async def close(self, *, send_stop: bool = True) -> None:
        """Twilio leaving the stream: ``stop`` then close (skipped if the server already closed)."""
        if self._stopped:
            return
        self._stopped = True
        ws = self._ws
        if ws is None:
            return
        if send_stop:
            with contextlib.suppress(ConnectionClosed, OSError):
                await self._send(
                    stop_message(
                        account_sid=self.account_sid, stream_sid=self.stream_sid, call_sid=self.call_sid
                    )
                )
        with contextlib.suppress(ConnectionClosed, OSError):
            await ws.close()


def _ignore_closed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("mark echo not sent: %r", task.exception())
