"""SSML for Azure text-to-speech: model output goes in as text, never as markup."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

SSML_NAMESPACE = "http://www.w3.org/2001/10/synthesis"

# Characters XML 1.0 forbids even when escaped; a model can emit them and they would break the document.
_FORBIDDEN = {c: None for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)}


def clean_text(text: str) -> str:
    """Drop control characters XML cannot carry and collapse whitespace runs."""
    return " ".join(text.translate(_FORBIDDEN).split())


def build_ssml(text: str, *, voice: str, language: str) -> str:
    """One ``<speak>`` document saying ``text`` in ``voice``; ``<``, ``&``, quotes … are escaped."""
    body = escape(clean_text(text))
    return (
        f"<speak version='1.0' xmlns='{SSML_NAMESPACE}' xml:lang={quoteattr(language)}>"
        f"<voice name={quoteattr(voice)}>{body}</voice></speak>"
    )
