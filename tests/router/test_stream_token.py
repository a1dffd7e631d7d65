"""Stream tokens: a hostile token (the stream's opener chooses it) is refused, never an exception."""

from __future__ import annotations

import pytest

from router.stream_token import StreamTokens

T0 = 1_700_000_000.0


@pytest.fixture
def tokens() -> StreamTokens:
    return StreamTokens(b"secret", 120, clock=lambda: T0)


def test_an_issued_token_verifies_for_its_call_only(tokens: StreamTokens) -> None:
    token = tokens.issue("CA1")
    assert tokens.verify(token, "CA1") is True
    assert tokens.verify(token, "CA2") is False


@pytest.mark.parametrize(
    "token",
    [
        f"{int(T0) + 60}.caf\u00e9",  # a non-ASCII MAC: compare_digest raised TypeError on str
        "\u00b2\u00b3.mac",  # non-ASCII digits pass str.isdigit()
        "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660.mac",  # Arabic-Indic digits that int() reads
    ],
)
def test_a_non_ascii_token_is_refused(tokens: StreamTokens, token: str) -> None:
    assert tokens.verify(token, "CA1") is False
