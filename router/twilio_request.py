"""Reading a Twilio webhook: the form body and its signature, checked before anything else happens."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from router.twilio_signature import TwilioSignatureValidator


class MalformedForm(Exception):
    """The body is not a form Twilio would send (not UTF-8)."""


class ForgedRequest(Exception):
    """Missing or wrong ``X-Twilio-Signature``."""


async def read_signed_form(request: Request, validator: TwilioSignatureValidator) -> dict[str, str]:
    """The webhook's form fields; :class:`ForgedRequest` if Twilio did not sign exactly this request,
    :class:`MalformedForm` if the body cannot be a Twilio form.

    The URL checked is rebuilt from ``PUBLIC_BASE_URL`` (see ``TwilioSignatureValidator``), so proxy
    headers cannot steer it. The body is parsed with ``parse_qsl`` (Twilio posts urlencoded forms).
    """
    body = await request.body()
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError as exc:
        raise MalformedForm("body is not UTF-8") from exc
    signature = request.headers.get("x-twilio-signature")
    if not validator.validate_http(request.url.path, request.url.query, form, signature):
        raise ForgedRequest("signature does not match")
    return form
