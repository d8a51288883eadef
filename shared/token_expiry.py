"""Until when a token counts as valid: the one rule every process applies.

A token is valid until the earlier of

- the ``exp`` claim of the access token, when it is a JWT (RFC 7519) that has one, and
- the time the token request was *sent* plus the response's ``expires_in`` (RFC 6749 §5.1),
  or the provider's ``default_expires_in`` when the response gives none;

and it stops being *usable* ``skew`` seconds before that (capped at a tenth of its lifetime,
so tokens of a few seconds stay usable). Both statements come from the issuer; the earlier one
binds, and a bogus far-future ``exp`` cannot keep a token alive past ``expires_in``.

The JWT is read, never verified: the proxy is not its audience and holds no key; the claim
only tells us when to stop using the token. An ``exp`` that is not a finite number, is at or
before the moment the request was sent (an issuer clock behind ours, or junk), or lies past
the year 9999 is ignored with a warning, and so is anything that is not a JWT at all: the
``expires_in`` rule then applies alone. Nothing here logs or raises with the token in it.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from shared.logging import get_logger

log = get_logger(__name__)

# 9999-12-31T23:59:59Z: past this no date library represents the claim; treat it as junk.
_LAST_NUMERIC_DATE = 253402300799.0
# A share of the lifetime, so a 4 s token keeps 3.6 s of use rather than none under a 30 s skew.
_MAX_SKEW_SHARE = 0.1


def expires_at(access_token: str, expires_in: object, sent_at: float, default_expires_in: float) -> float:
    """When a token issued for a request sent at ``sent_at`` expires (see the module docstring)."""
    lifetime = positive_seconds(expires_in)
    by_response = sent_at + (lifetime if lifetime is not None else default_expires_in)
    exp = jwt_exp(access_token)
    if exp is None:
        return by_response
    if not sent_at < exp <= _LAST_NUMERIC_DATE:
        log.warning(
            "ignoring the access token's exp claim",
            why="before the token request was sent" if exp <= sent_at else "past the year 9999",
        )
        return by_response
    return min(exp, by_response) if lifetime is not None else exp


def usable_until(expires_at: float, issued_at: float, skew: float) -> float:
    """The last moment (exclusive) a token may be sent: its expiry less the skew, capped by its lifetime."""
    lifetime = max(expires_at - issued_at, 0.0)
    return expires_at - min(skew, lifetime * _MAX_SKEW_SHARE)


def positive_seconds(value: object) -> float | None:
    """``expires_in`` as a finite number of seconds above zero, else None (missing, junk, bool, NaN, inf)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def jwt_exp(access_token: str) -> float | None:
    """The ``exp`` claim of a JWS-compact access token, unverified; None when there is none to read."""
    if access_token.count(".") != 2:
        return None
    claims = _claims(access_token)
    if claims is None:
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        value = float(exp)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _claims(access_token: str) -> dict[str, Any] | None:
    # joserfc (already loaded with authlib by the token request) parses the JWS and its header;
    # only the payload's JSON is ours to read.
    from joserfc.errors import JoseError
    from joserfc.jws import extract_compact

    try:
        payload = extract_compact(access_token.encode("ascii")).payload
        claims = orjson.loads(payload)
    except (JoseError, ValueError, TypeError, UnicodeError, OverflowError):
        return None
    return claims if isinstance(claims, dict) else None
