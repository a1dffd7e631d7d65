"""SSML for Azure text-to-speech: model output goes in as text, never as markup."""

from __future__ import annotations

import re
from xml.sax.saxutils import escape, quoteattr

SSML_NAMESPACE = "http://www.w3.org/2001/10/synthesis"

# Characters XML 1.0 forbids even when escaped (controls, lone surrogates, U+FFFE, U+FFFF); a model can emit
# them (JSON's "\ud800" decodes to a lone surrogate, which cannot even be encoded as UTF-8) and they would
# break the document.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean_text(text: str) -> str:
    """Drop characters XML cannot carry and collapse whitespace runs."""
    return " ".join(_FORBIDDEN.sub("", text).split())


def build_ssml(text: str, *, voice: str, language: str) -> str:
    """One ``<speak>`` document saying ``text`` in ``voice``; ``<``, ``&``, quotes … are escaped."""
    body = escape(clean_text(text))
    return (
        f"<speak version='1.0' xmlns='{SSML_NAMESPACE}' xml:lang={quoteattr(language)}>"
        f"<voice name={quoteattr(voice)}>{body}</voice></speak>"
    )
