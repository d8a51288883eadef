"""The one rule for a token's validity (shared/token_expiry.py), against generated token responses.

The generator builds the access token (a JWT whose claims it chose, or junk) and ``expires_in``,
and ``_model`` says from those same choices when the token must expire; the code must agree for
every case and never raise, whatever the third party sent.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from shared.token_expiry import expires_at, jwt_exp, positive_seconds, usable_until
from shared.token_store import TokenRecord

SENT = 1_800_000_000.0
DEFAULT = 120.0
SETTINGS = settings(derandomize=True, max_examples=400, deadline=None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(header: bytes, payload: bytes, signature: str = "sig") -> str:
    return f"{_b64(header)}.{_b64(payload)}.{signature}"


HS256 = b'{"alg":"HS256"}'


def _jwt(claims: Any, header: Any = None) -> str:
    header = {"alg": "RS256", "typ": "JWT"} if header is None else header
    return _raw(json.dumps(header).encode(), json.dumps(claims).encode(), _b64(b"not-checked"))


EXPS = st.one_of(
    st.floats(min_value=SENT - 10**6, max_value=SENT + 10**6),  # past and future, fractions included
    st.integers(min_value=-(2**63), max_value=2**63 - 1),  # the epoch, negatives, past the year 9999
    st.sampled_from([SENT, SENT + 1, SENT + 3600, 253402300799, 253402300800, 0, -1]),
    st.booleans(),
    st.text(max_size=12),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
EXPIRES_IN = st.one_of(
    st.none(),
    st.integers(min_value=-(10**6), max_value=10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["3600", "60.5", "-5", "abc", "", "1e400", "nan", "inf", True, False, [60], {"s": 1}]),
    st.text(max_size=8),
)
JUNK_TOKENS = st.one_of(
    st.text(alphabet="ABCxyz019-_.~+/=", max_size=40),
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", *[st.text(alphabet="ABCxyz019-_=+/", max_size=12)] * 3),
    st.builds(lambda p: _raw(HS256, p), st.binary(max_size=24)),
    st.builds(lambda h: _raw(h, b'{"exp":1900000000}'), st.binary(max_size=24)),
)


def _model(exp: Any, expires_in: Any) -> float:
    """What the token's expiry must be, from what the generator put into the response."""
    lifetime = positive_seconds(expires_in)
    by_response = SENT + (lifetime if lifetime is not None else DEFAULT)
    numeric = isinstance(exp, int | float) and not isinstance(exp, bool) and abs(exp) < 1e300
    if not numeric or not SENT < float(exp) <= 253402300799:
        return by_response
    return min(float(exp), by_response) if lifetime is not None else float(exp)


@SETTINGS
@given(exp=EXPS, expires_in=EXPIRES_IN, extra=st.dictionaries(st.sampled_from(["iat", "sub", "aud"]), st.integers()))
@example(exp=SENT + 1, expires_in=4, extra={})  # a JWT that dies before expires_in says: exp wins
@example(exp=SENT + 3600, expires_in=4, extra={})  # one that claims longer: expires_in still binds
@example(exp=SENT - 10, expires_in=4, extra={})  # already past when sent (issuer clock behind): expires_in
@example(exp=SENT + 10, expires_in=None, extra={})  # no expires_in: the JWT says it better than the default
@example(exp=10**30, expires_in=None, extra={})  # past the year 9999: junk
@example(exp="1800000100", expires_in="60", extra={})  # exp as a string is not a NumericDate
@example(exp=SENT + 10, expires_in=math.inf, extra={})
@example(exp=SENT + 10, expires_in="1e400", extra={})
@example(exp=True, expires_in=True, extra={})
def test_jwt_expiry_follows_the_rule(exp: Any, expires_in: Any, extra: dict[str, int]) -> None:
    claims = {**extra, "exp": exp} if exp is not None else extra
    token = _jwt(claims)
    got = expires_at(token, expires_in, SENT, DEFAULT)
    assert got == _model(exp, expires_in)
    assert math.isfinite(got) and got >= SENT


@SETTINGS
@given(token=JUNK_TOKENS, expires_in=EXPIRES_IN)
@example(token="at-acme-demo-Zm9v", expires_in=3600)
@example(token="a.b.c", expires_in=None)
@example(token="", expires_in=2e-190)  # a lifetime lost in the float sum: still no error
@example(token=_raw(b"[1]", b"{}"), expires_in=60)  # a header that is not an object
@example(token=_raw(b"{}", b'{"exp":1900000000}'), expires_in=60)  # no alg
@example(token=_raw(HS256, b"[1]"), expires_in=60)  # claims not an object
@example(token=_raw(HS256, b'{"exp":1e400}'), expires_in=60)  # exp overflows a double
@example(token=_raw(HS256, b'{"exp":NaN}'), expires_in=60)
@example(token=_b64(b'{"alg":"HS256","b64":false}') + ".exp.x", expires_in=60)  # RFC 7797: payload not base64
def test_anything_else_falls_back_to_expires_in(token: str, expires_in: Any) -> None:
    """Not a JWT, or one whose claims cannot be read: expires_in (or the default), never an exception."""
    lifetime = positive_seconds(expires_in)
    by_response = SENT + (lifetime if lifetime is not None else DEFAULT)
    got = expires_at(token, expires_in, SENT, DEFAULT)
    assert math.isfinite(got) and SENT <= got
    exp = jwt_exp(token)
    assert got == by_response or (exp is not None and got == _model(exp, expires_in))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(3600, 3600.0), ("3600", 3600.0), ("60.5", 60.5), (0.25, 0.25), (0, None), (-5, None), ("-5", None)]
    + [(None, None), ("abc", None), (True, None), (math.nan, None), (math.inf, None), ("1e400", None), ([60], None)],
)
def test_expires_in_is_a_positive_finite_number_of_seconds(value: Any, seconds: float | None) -> None:
    assert positive_seconds(value) == seconds


@SETTINGS
@given(
    lifetime=st.floats(min_value=0.001, max_value=10**7),
    skew=st.floats(min_value=0, max_value=10**4),
)
@example(lifetime=4.0, skew=30.0)  # a 4 s token keeps 3.6 s of use under the default skew
@example(lifetime=3600.0, skew=30.0)
def test_usable_until_takes_the_skew_capped_at_a_tenth_of_the_life(lifetime: float, skew: float) -> None:
    until = usable_until(SENT + lifetime, SENT, skew)
    assert SENT + lifetime - skew - 1e-6 <= until <= SENT + lifetime
    assert until >= SENT + lifetime * 0.9 - 1e-6
    record = TokenRecord("acme", "demo", access_token=SecretStr("t"), issued_at=SENT, expires_at=SENT + lifetime)
    assert record.usable(until - 1e-3 * lifetime, skew) and not record.usable(until, skew)


@settings(
    derandomize=True, max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(exp=EXPS)
def test_the_token_never_reaches_a_log_line(caplog: pytest.LogCaptureFixture, exp: Any) -> None:
    caplog.clear()
    token = _jwt({"exp": exp, "sub": "secret-subject-xyz"})
    with caplog.at_level(logging.DEBUG):
        expires_at(token, 60, SENT, DEFAULT)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in text and token.split(".")[1] not in text and "secret-subject-xyz" not in text
