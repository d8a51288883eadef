"""The tenant's token as an upstream may echo it back: masked before anything reaches the caller or the cache.

A provider repeating the request in an answer (a ``WWW-Authenticate`` error
description, a debug header, a JSON error body quoting the ``Authorization`` it
got) would hand the caller the token the proxy exists to keep from it. Masked:
every header, every answer read whole (up to ``PROXY_BUFFER_RESPONSE_LIMIT``),
and every answer of unknown length (chunked) as it streams (``BodyMask``: a
spelling cut between two reads is held back until it can be told). Each
character of a spelling becomes ``*``, so a body keeps its length. An answer
with a ``Content-Length`` over the limit passes as sent: it is spliced in the
kernel or copied at the speed large downloads need, and searching it would cost
about 0.4 ns a byte (30 µs per 64 KiB read, more than the copy itself). A
compressed answer is decoded first (``codings.py``), whatever its length: the
coded bytes would hide any spelling.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

from multidict import CIMultiDict

# What every spelling leaves as it is: URL-encoding and JSON escape only other characters.
_KEPT = re.compile(r"[A-Za-z0-9._~-]+")


@dataclass(frozen=True, slots=True)
class _Spellings:
    forms: tuple[str, ...]
    needle: str  # in every spelling: where it is absent (nearly always), one search was the whole cost
    raw_needle: bytes
    text: re.Pattern[str]
    raw: re.Pattern[bytes]


@functools.lru_cache(maxsize=1024)
def _spellings(token: str) -> _Spellings:
    """Every spelling of the token an echo may use: as sent, URL-encoded (either hex case), '/' escaped in JSON."""
    encoded = {quote(token, safe=""), quote_plus(token)}
    forms = {token, token.replace("/", "\\/"), *encoded, *(re.sub("%[0-9A-F]{2}", _lower, e) for e in encoded)}
    ordered = tuple(sorted(forms, key=len, reverse=True))  # longest first: a spelling inside another masked whole
    alternatives = "|".join(map(re.escape, ordered))
    needle = max(_KEPT.findall(token), key=len, default="")  # "": found everywhere, the patterns decide
    return _Spellings(ordered, needle, needle.encode(), re.compile(alternatives), re.compile(alternatives.encode()))


def _lower(match: re.Match[str]) -> str:
    return match[0].lower()


def _stars(match: re.Match[str]) -> str:
    return "*" * len(match[0])


def _raw_stars(match: re.Match[bytes]) -> bytes:
    return b"*" * len(match[0])


def mask_headers(headers: CIMultiDict[str], token: str) -> None:
    """Mask the token in every header value, in place."""
    spellings = _spellings(token)
    if spellings.needle not in "\n".join(headers.values()):
        return
    masked = [(name, spellings.text.sub(_stars, value)) for name, value in headers.items()]
    headers.clear()
    headers.extend(masked)


def mask_body(body: bytes, token: str) -> bytes:
    """The body with every spelling of the token masked (the same bytes when there is none)."""
    spellings = _spellings(token)
    if spellings.raw_needle not in body:
        return body
    return spellings.raw.sub(_raw_stars, body)


class BodyMask:
    """Masks a body that arrives in pieces: what could be the start of a spelling waits for the next piece.

    Only the end of a piece that is the start of a spelling is held back (none for nearly every
    piece: a line or an event ends in a character no token has), so a streamed answer is not delayed.
    """

    def __init__(self, token: str) -> None:
        self._token = token
        self._starts = tuple(f.encode() for f in _spellings(token).forms)
        self._held = b""

    def feed(self, piece: bytes) -> bytes:
        """What may go to the caller now."""
        data = mask_body(self._held + piece if self._held else piece, self._token)
        keep = self._partial(data)
        self._held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep] if keep else data

    def rest(self) -> bytes:
        """At the end of the body: what was held back is no spelling's start any more."""
        held, self._held = self._held, b""
        return held

    def _partial(self, data: bytes) -> int:
        """The length of the longest end of ``data`` that a spelling starts with (shorter than the spelling)."""
        longest = 0
        for form in self._starts:
            at = data.find(form[:1], max(len(data) - len(form) + 1, 0))
            while at >= 0 and len(data) - at > longest:
                if form.startswith(data[at:]):
                    longest = len(data) - at
                    break
                at = data.find(form[:1], at + 1)
        return longest
