"""The Speech service's WebSocket endpoints plus the emulator's control endpoints, as a Starlette app.

Handshake: ``Ocp-Apim-Subscription-Key`` (or ``Authorization: Bearer``) is checked when a key is
configured (wrong → HTTP 401, so the SDK reports an authentication failure); the ``USP`` subprotocol is
echoed when offered. Each accepted socket is then served by a TTS or STT session.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from emulators.azure_speech.connection import CloseConnection, UspConnection
from emulators.azure_speech.knobs import SpeechKnobStore
from emulators.azure_speech.records import HandshakeRecord, SpeechLog
from emulators.azure_speech.stt import RECOGNITION_MODES, SttSession, TranscriptSource
from emulators.azure_speech.tts import TtsSession
from emulators.control import control_routes, json_response

log = logging.getLogger("emulators.azure_speech")


class SpeechApp:
    def __init__(
        self,
        *,
        knobs: SpeechKnobStore,
        log: SpeechLog,
        transcripts: TranscriptSource,
        subscription_key: str | None,
        voice_allowed: Callable[[str], bool],
    ) -> None:
        self.knobs = knobs
        self.log = log
        self.transcripts = transcripts
        self.subscription_key = subscription_key
        self.voice_allowed = voice_allowed

    def build(self) -> Starlette:
        return Starlette(
            routes=[
                WebSocketRoute("/cognitiveservices/websocket/v1", self.tts),
                WebSocketRoute("/speech/recognition/{mode}/cognitiveservices/v1", self.stt),
                *control_routes(apply=self.apply_control, state=self.state_dict),
            ]
        )

    # -- control ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "knobs": asdict(self.knobs.snapshot()),
            "transcripts": self.transcripts.script,
            **self.log.to_dict(),
        }

    def apply_control(self, changes: dict[str, Any]) -> None:
        """A ``POST /_emulator/faults`` body: knobs plus ``transcripts`` and ``clear_records``."""
        transcripts = changes.pop("transcripts", None)
        clear = bool(changes.pop("clear_records", False))
        if transcripts is not None and (
            not isinstance(transcripts, list)
            or not all(isinstance(t, str) for t in transcripts)
            or not transcripts
        ):
            raise ValueError("transcripts must be a non-empty list of strings")
        self.knobs.update(**changes)
        if transcripts is not None:
            self.transcripts.set_script(transcripts)
        if clear:
            self.log.clear()

    # -- websockets ------------------------------------------------------------------------------------

    async def tts(self, websocket: WebSocket) -> None:
        connection = await self._accept(websocket)
        if connection is not None:
            session = TtsSession(connection, knobs=self.knobs, log=self.log, voice_allowed=self.voice_allowed)
            await self._serve(connection, session.run)

    async def stt(self, websocket: WebSocket) -> None:
        mode = str(websocket.path_params["mode"])
        if mode not in RECOGNITION_MODES:
            await websocket.send_denial_response(
                json_response({"error": f"unknown recognition mode {mode}"}, 404)
            )
            return
        connection = await self._accept(websocket)
        if connection is not None:
            session = SttSession(
                connection, mode=mode, knobs=self.knobs, log=self.log, transcripts=self.transcripts
            )
            await self._serve(connection, session.run)

    async def _accept(self, websocket: WebSocket) -> UspConnection | None:
        headers = websocket.headers
        key = headers.get("ocp-apim-subscription-key")
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        record = HandshakeRecord(
            path=websocket.url.path,
            query=websocket.url.query,
            connection_id=headers.get("x-connectionid", "") or uuid.uuid4().hex,
            subscription_key=key,
            user_agent=headers.get("user-agent", ""),
            status=101,
        )
        self.log.add_handshake(record)
        refusal = self.knobs.take_refusal()
        if refusal is not None:
            record.status = refusal
            await websocket.send_denial_response(
                json_response({"error": "service unavailable (emulated)"}, refusal)
            )
            return None
        if self.subscription_key is not None and self.subscription_key not in (key, token):
            record.status = 401
            await websocket.send_denial_response(
                json_response(
                    {
                        "error": {
                            "code": "401",
                            "message": "Access denied due to invalid subscription key or wrong API endpoint.",
                        }
                    },
                    401,
                )
            )
            return None
        offered = [p for p in websocket.scope.get("subprotocols", []) if p.lower() == "usp"]
        await websocket.accept(subprotocol=offered[0] if offered else None)
        connection = UspConnection(websocket, record.connection_id)
        connection.start_reading()
        return connection

    async def _serve(self, connection: UspConnection, run: Callable[[], Any]) -> None:
        try:
            await run()
        except CloseConnection as close:
            log.info(
                "connection %s closed by emulator: %s %s", connection.connection_id, close.code, close.reason
            )
            await connection.close(close.code, close.reason)
            return
        except WebSocketDisconnect:
            return  # the client went away mid-answer
        except Exception:
            log.exception("connection %s: emulator error", connection.connection_id)
            await connection.close(1011, "Emulator internal error.")
            return
        await connection.close()
