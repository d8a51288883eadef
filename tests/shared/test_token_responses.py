"""What a real token endpoint's answer makes of a token's expiry (shared/oauth.py, shared/token_expiry.py).

Over HTTP on 127.0.0.1, through authlib as in production: a JWT's ``exp`` earlier than
``expires_in`` wins, and an ``expires_in`` a careless provider sends as junk falls back to the
provider's default instead of failing (or crashing) the token request.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.oauth import TokenRequestError, request_token
from tests.helpers import load
from tests.third_party import DROP, ThirdParty, running_third_party

DEFAULT = 120.0  # tests/helpers.py gives every provider this default_expires_in


@pytest.fixture
async def party() -> AsyncIterator[ThirdParty]:
    async with running_third_party(lifetime=60) as tp:
        yield tp


async def _issue(party: ThirdParty, tmp_path: Path) -> Any:
    config = load(tmp_path, party, ["acme"])
    return await request_token(config.providers["demo"], config.credentials("acme", "demo"), None, 5.0)


async def test_a_jwt_that_dies_before_expires_in_is_valid_until_its_exp(party: ThirdParty, tmp_path: Path) -> None:
    party.jwt_lifetime = 1.5  # expires_in still says 60
    issued = await _issue(party, tmp_path)
    (_, exp), *_ = party.tokens.values()
    assert issued.expires_at == exp
    assert exp - issued.issued_at < 2.0


async def test_a_jwt_that_claims_longer_than_expires_in_is_held_to_expires_in(
    party: ThirdParty, tmp_path: Path
) -> None:
    party.jwt_lifetime = 3600.0
    issued = await _issue(party, tmp_path)
    assert issued.expires_at == issued.issued_at + 60


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        ("3600", 3600.0),
        ("60.5", 60.5),
        (0.5, 0.5),
        (DROP, DEFAULT),
        (None, DEFAULT),
        (-5, DEFAULT),
        (0, DEFAULT),
        ("abc", DEFAULT),
        ("", DEFAULT),
        (True, DEFAULT),
        ([60], DEFAULT),
        ({"seconds": 60}, DEFAULT),
        (math.inf, DEFAULT),  # sent as Infinity, which Python's JSON reader takes
        (math.nan, DEFAULT),
        pytest.param(10**400, DEFAULT, id="10**400"),
    ],
)
async def test_junk_expires_in_falls_back_to_the_default(
    party: ThirdParty, tmp_path: Path, expires_in: Any, lifetime: float
) -> None:
    party.body_overrides["expires_in"] = expires_in
    try:
        issued = await _issue(party, tmp_path)
    except TokenRequestError as exc:  # pragma: no cover - the failure this test exists to show
        pytest.fail(f"token request failed over expires_in={expires_in!r}: {exc.reason}: {exc}")
    assert issued.expires_at - issued.issued_at == pytest.approx(lifetime)
    assert issued.access_token.get_secret_value() in party.tokens


@pytest.mark.parametrize(
    "token_type",
    ["Bearer\r\nX-Evil: 1", "Bearer x", "Bearer\t", ["Bearer"], {"t": 1}, 42, "Bé"],
    ids=["crlf", "space", "tab", "list", "object", "number", "non-ascii"],
)
async def test_a_token_type_that_is_no_auth_scheme_is_refused(
    party: ThirdParty, tmp_path: Path, token_type: Any
) -> None:
    # It becomes the Authorization header's scheme: anything but a token would break (or inject into) every
    # request made with the token, long after the token request "succeeded".
    party.body_overrides["token_type"] = token_type
    with pytest.raises(TokenRequestError, match="token_type is not an auth-scheme") as caught:
        await _issue(party, tmp_path)
    assert caught.value.reason == "invalid_response" and not caught.value.permanent


@pytest.mark.parametrize(
    ("token_type", "kept"), [("bearer", "bearer"), ("DPoP", "DPoP"), ("", "Bearer"), (None, "Bearer")]
)
async def test_a_usual_token_type_is_kept(party: ThirdParty, tmp_path: Path, token_type: Any, kept: str) -> None:
    party.body_overrides["token_type"] = token_type
    assert (await _issue(party, tmp_path)).token_type == kept
