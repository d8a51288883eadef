"""The streamed mask against the whole-body one: wherever the pieces are cut, the caller gets the same bytes.

A differential test: ``BodyMask`` fed a body in pieces must give exactly what
``mask_body`` gives for the whole body, keep its length, and leave no spelling of
the token, however the pieces cut a spelling (or several overlapping ones).
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.auth_proxy.echo import BodyMask, mask_body

# Bearer tokens (RFC 6750 b64token): a small alphabet, so that near-misses and overlaps are common.
tokens = st.builds(
    lambda head, tail: head + tail,
    st.text("aAe9-._~+/", min_size=1, max_size=12),
    st.sampled_from(["", "=", "=="]),
)


def spellings(token: str) -> list[str]:
    encoded = [quote(token, safe=""), quote_plus(token)]
    return [token, token.replace("/", "\\/"), *encoded, *(re.sub("%[0-9A-F]{2}", _lower, e) for e in encoded)]


def _lower(match: re.Match[str]) -> str:
    return match[0].lower()


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes, list[int]]:
    token = draw(tokens)
    parts = draw(
        st.lists(
            st.one_of(
                st.sampled_from(spellings(token)),
                st.text('aAe9-._~+/%2F=\\" \n', max_size=8),
                st.sampled_from(spellings(token)).map(lambda s: s[: len(s) // 2]),
            ),
            max_size=8,
        )
    )
    body = "".join(parts).encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
    return token, body, cuts


@settings(max_examples=200, derandomize=True, database=None)
@given(case=bodies())
@example(case=("ab", b"xxab", [3]))  # a spelling cut one byte in
@example(case=("aa", b"aaa", [1, 2]))  # overlapping spellings
def test_a_body_masked_in_pieces_is_the_body_masked_whole(case: tuple[str, bytes, list[int]]) -> None:
    token, body, cuts = case
    mask = BodyMask(token)
    bounds = [0, *cuts, len(body)]
    streamed = b"".join(mask.feed(body[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a)
    streamed += mask.rest()
    whole = mask_body(body, token)
    assert streamed == whole
    assert len(whole) == len(body)
    for form in spellings(token):
        assert form.encode() not in whole, form
