"""Twilio request signatures, checked against the configured public URL (never against proxy headers).

Twilio signs the URL it called: for HTTP webhooks ``PUBLIC_BASE_URL + path (+ query)`` plus the sorted
form parameters; for the Media Streams upgrade the ``wss://`` form of the same URL with no parameters.
Rebuilding the URL from ``PUBLIC_BASE_URL`` instead of ``Host``/``X-Forwarded-*`` means a client cannot
choose the URL we check its signature against.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator


class TwilioForm(dict[str, str]):
    """A webhook form: each field's last value, as handlers read it, plus every value of a field sent more
    than once (``repeated``), because Twilio signs all of them.

    Also the form as ``RequestValidator`` reads it fastest: it asks ``getall`` (Flask's MultiDict), then
    ``getlist`` (Django's QueryDict), and falls back to ``[d[name]]`` only after two AttributeErrors per
    field, which made raising and catching them most of the cost of checking a signature."""

    repeated: dict[str, list[str]] | None = None  # set on the instance only when a field repeats (rare)

    def getall(self, name: str) -> list[str]:
        repeated = self.repeated
        if repeated is not None and name in repeated:
            return repeated[name]
        return [self[name]]


class TwilioSignatureValidator:
    def __init__(self, auth_token: str, public_base_url: str) -> None:
        self._validator = RequestValidator(auth_token)
        parts = urlsplit(public_base_url.rstrip("/"))
        self._http_origin = f"{parts.scheme}://{parts.netloc}{parts.path}"
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        self._ws_origin = f"{ws_scheme}://{parts.netloc}{parts.path}"
        self._enabled = bool(auth_token)

    def http_url(self, path: str, query: str = "") -> str:
        """The URL Twilio called, as it signed it."""
        return f"{self._http_origin}{path}" + (f"?{query}" if query else "")

    def ws_url(self, path: str, query: str = "") -> str:
        return f"{self._ws_origin}{path}" + (f"?{query}" if query else "")

    def validate_http(self, path: str, query: str, params: Mapping[str, str], signature: str | None) -> bool:
        return self._validate(self.http_url(path, query), params, signature)

    def validate_ws(self, path: str, query: str, signature: str | None) -> bool:
        return self._validate(self.ws_url(path, query), {}, signature)

    def _validate(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        if not signature or not self._enabled:
            return False
        # Fast path: one HMAC over the exact URL we serve. ``RequestValidator.validate`` computes two
        # (with and without the default port) and remains the fallback for a URL signed with a port.
        values = params if isinstance(params, TwilioForm) else TwilioForm(params)  # parse_form's: no copy
        expected: str = self._validator.compute_signature(url, values)
        if hmac.compare_digest(expected.encode(), signature.encode()):
            return True
        return bool(self._validator.validate(url, values, signature))


def sign(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """Compute ``X-Twilio-Signature`` for a request to ``url`` with form ``params``."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params or {})))
