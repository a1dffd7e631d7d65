"""How uvicorn serves the router, in one place: ``python -m router serve``, the offline demo and the full-app
tests all use it.

Three choices matter to callers:

- **Keep-alive longer than the clients' idle timeout.** Twilio's webhook fetcher, and any load balancer in
  front of the service, pool their connections. When the server closes an idle connection (uvicorn's default
  is after 5 s) at the moment a client sends a request on it, the request dies unanswered: behind a load
  balancer that is a 502, at Twilio an 11200 and an application error in the caller's ear. The side that
  closes an idle connection should be the client, so the server waits longer than any of them: 75 s, past the
  60 s idle timeout common to load balancers.
- **WebSocket frames capped at 64 KiB**, the largest a Twilio media-stream frame may be here
  (:data:`realtime_pipeline.twilio_media.MAX_FRAME_BYTES`), with uvicorn's current ``websockets``
  implementation (the legacy one is deprecated).
- **No WebSocket compression** (``permessage-deflate``), which uvicorn accepts by default whenever a client
  offers it. Base64 μ-law shrinks only to about 63 % under deflate, and each frame would cost ~23 µs to compress
  (the bridge's own work on a frame is 2–5 µs) plus ~46 KB of zlib state per call, a fifth of the memory
  budget. A client that offers it is answered without it, which the WebSocket protocol allows (RFC 7692 §5).
- **No ``X-Forwarded-*`` rewriting** (``proxy_headers`` off): Twilio signatures are checked against
  ``PUBLIC_BASE_URL``, and nothing else should take a client's word for the scheme or address.
"""

from __future__ import annotations

from typing import Any

from realtime_pipeline.twilio_media import MAX_FRAME_BYTES
from router.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` besides the app, host, port and logging."""
    return {
        "ws": "websockets-sansio",
        "ws_max_size": MAX_FRAME_BYTES,
        "ws_per_message_deflate": False,
        "timeout_keep_alive": settings.http_keep_alive_seconds,
        "proxy_headers": False,
    }
