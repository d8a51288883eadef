"""The egress policy: a request target either maps into the provider's API base or is refused.

Checked on the raw request target, before any decoding aiohttp does, so that no
spelling of a path (absolute-form, ``//host``, ``..`` in any percent-encoding,
backslashes, ``@``) can make the proxy send a tenant's token anywhere else.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

# Control characters, space, backslash and '@' never belong in a forwarded path.
_FORBIDDEN_RAW = re.compile(r"[\x00-\x20\x7f\\@]")
# Encoded separators and NUL would be decoded differently by different servers; %C0 and %C1 only ever
# start an overlong UTF-8 sequence (%C0%AE is '.' to a lax decoder).
_FORBIDDEN_ENCODED = re.compile(r"%(2f|5c|00|c0|c1)", re.IGNORECASE)
# Once decoded, '@' is fine (an e-mail address in a path); separators and controls are not.
_FORBIDDEN_DECODED = re.compile(r"[\x00-\x1f\x7f\\]")
# '..;x' is '..' to servlet containers (Tomcat, Jetty), which cut path parameters before resolving dots.
_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(;[^/]*)?(/|$)")


class EgressRefused(ValueError):
    """The target does not stay inside the provider's API base; the message says why."""


def upstream_target(raw_target: str) -> str:
    """The path-and-query to append to the API base, or raise :class:`EgressRefused`."""
    path, sep, query = raw_target.partition("?")
    if not path.startswith("/") or path.startswith("//"):
        raise EgressRefused("request target must be a path starting with a single '/'")
    if _FORBIDDEN_RAW.search(path):
        raise EgressRefused("path contains a control character, space, backslash or '@'")
    if _FORBIDDEN_ENCODED.search(path):
        raise EgressRefused("path contains an encoded '/', '\\', NUL or overlong UTF-8")
    decoded = path
    # Decode until stable so double encodings (%252e) cannot hide a '..'.
    for _ in range(3):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    # Servers that fold Unicode compatibility forms (IIS, some Java stacks) read a full-width or
    # one-dot-leader pair as '..' and a full-width solidus as '/': check the folded form too.
    folded = decoded if decoded.isascii() else unicodedata.normalize("NFKC", decoded)
    if any(_DOT_SEGMENT.search(p) or _FORBIDDEN_DECODED.search(p) for p in (decoded, folded)):
        raise EgressRefused("path contains a '.' or '..' segment or a forbidden character once decoded")
    if "\r" in query or "\n" in query:
        raise EgressRefused("query contains CR or LF")
    return path + sep + query
