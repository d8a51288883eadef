"""The tenant's token as an upstream may echo it back: masked before anything reaches the caller or the cache.

A provider repeating the request in an answer (a ``WWW-Authenticate`` error
description, a debug header, a JSON error body quoting the ``Authorization`` it
got) would hand the caller the token the proxy exists to keep from it. Headers
and answers read whole are masked; an answer over ``PROXY_BUFFER_RESPONSE_LIMIT``
streams (or is spliced in the kernel) and is passed on as the provider sent it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

from multidict import CIMultiDict

MASK = "***"


# What every spelling leaves as it is: URL-encoding and JSON escape only other characters.
_KEPT = re.compile(r"[A-Za-z0-9._~-]+")


@dataclass(frozen=True, slots=True)
class _Spellings:
    needle: str  # in every spelling: where it is absent (nearly always), one search was the whole cost
    raw_needle: bytes
    text: re.Pattern[str]
    raw: re.Pattern[bytes]


@functools.lru_cache(maxsize=1024)
def _spellings(token: str) -> _Spellings:
    """Every spelling of the token an echo may use: as sent, URL-encoded (either hex case), '/' escaped in JSON."""
    encoded = {quote(token, safe=""), quote_plus(token)}
    forms = {token, token.replace("/", "\\/"), *encoded, *(re.sub("%[0-9A-F]{2}", _lower, e) for e in encoded)}
    # Longest first, so that a spelling inside another is masked whole.
    alternatives = "|".join(map(re.escape, sorted(forms, key=len, reverse=True)))
    needle = max(_KEPT.findall(token), key=len, default="")  # "": found everywhere, the patterns decide
    return _Spellings(needle, needle.encode(), re.compile(alternatives), re.compile(alternatives.encode()))


def _lower(match: re.Match[str]) -> str:
    return match[0].lower()


def mask_headers(headers: CIMultiDict[str], token: str) -> None:
    """Mask the token in every header value, in place."""
    spellings = _spellings(token)
    if spellings.needle not in "\n".join(headers.values()):
        return
    masked = [(name, spellings.text.sub(MASK, value)) for name, value in headers.items()]
    headers.clear()
    headers.extend(masked)


def mask_body(body: bytes, token: str) -> bytes:
    """The body with every spelling of the token masked (the same bytes when there is none)."""
    spellings = _spellings(token)
    if spellings.raw_needle not in body:
        return body
    return spellings.raw.sub(MASK.encode(), body)
