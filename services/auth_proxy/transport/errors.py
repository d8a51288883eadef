"""What the transport raises: a caller's body that broke off, an upstream that cannot be reached or read."""

from __future__ import annotations

import aiohttp


class CallerBodyError(Exception):
    """The caller's request body broke off or was malformed (bad chunk framing, short of its length)."""


class UpstreamUnreachable(aiohttp.ClientConnectionError):
    """No connection could be opened: refused, unresolvable, or the TLS handshake failed."""

    def __init__(self, message: str, tls: bool = False) -> None:
        super().__init__(message)
        self.tls = tls  # the TLS handshake failed (an untrusted or mismatched certificate, say)


class BadUpstreamResponse(aiohttp.ClientError):
    """The upstream's answer is not valid HTTP/1.1."""


class HeaderInjection(aiohttp.ClientError):
    """A header value holds CR or LF (a token endpoint's token, say); nothing was sent."""
