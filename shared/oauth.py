"""One OAuth2 token request, made with authlib, its failures sorted into transient and permanent.

A refusal the provider means for good (``invalid_grant``, ``invalid_client``...)
is permanent and must not be retried in a loop; everything else (timeouts,
5xx, an HTML error page, a JSON without ``access_token``) is transient.

authlib and httpx2 (with anyio, joserfc, httpcore2, h11 under them) are imported
by the first token request, not with this module: every proxy process imports
it, yet tokens are refreshed by the importers on schedule and a proxy rarely asks
for one itself, so most proxies would carry them (about 4 MB) for nothing.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

from shared.logging import get_logger
from shared.tenants import Credentials, Provider
from shared.token_expiry import expires_at, positive_seconds

if TYPE_CHECKING:
    from authlib.integrations.httpx_client import AsyncOAuth2Client

log = get_logger(__name__)

# RFC 6750 §2.1: what a bearer token may consist of.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 9110 §11.1: the auth-scheme the token type becomes in the Authorization header is a token.
_AUTH_SCHEME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 6749 §5.2 errors that no retry will cure.
PERMANENT_ERRORS = frozenset(
    {"invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type", "invalid_scope"}
)


class TokenRequestError(Exception):
    """A token request failed. ``reason`` is a short label safe for metrics; the message is scrubbed."""

    def __init__(self, reason: str, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: SecretStr
    refresh_token: SecretStr | None
    token_type: str
    issued_at: float  # when the token request was sent
    expires_at: float  # shared.token_expiry.expires_at: the JWT's exp or issued_at + expires_in


async def request_token(
    provider: Provider,
    credentials: Credentials,
    refresh_token: SecretStr | None,
    timeout: float,
) -> IssuedToken:
    """Ask the provider for a new token: by refresh token where there is one, else client credentials."""
    secrets = secret_forms(credentials, refresh_token)
    # Taken before the request leaves (never after the answer): expires_in counts from the
    # sending, and a slow answer must not stretch the token's life on our side.
    started = time.time()
    try:
        body = await _call(provider, credentials, refresh_token, timeout)
    except _client_errors() as exc:
        raise _classify(exc, timeout, secrets) from None
    return _issued(provider, body, refresh_token, started, secrets)


def _client_errors() -> tuple[type[Exception], ...]:
    # Evaluated only once an exception is on its way, by when _call has imported these.
    import httpx2
    from authlib.integrations.httpx_client import OAuthError

    return (OAuthError, httpx2.HTTPError, ValueError)


async def _call(
    provider: Provider, credentials: Credentials, refresh_token: SecretStr | None, timeout: float
) -> dict[str, Any]:
    # Made in a thread: the first call imports authlib and httpx2 (50-110 ms here) and every
    # call loads the CA bundle into a new SSL context (30-45 ms); on the event loop either
    # would hold up every request the process is serving meanwhile.
    client = await asyncio.to_thread(_new_client, provider, credentials, timeout)
    async with client:
        url = str(provider.token_url)
        if refresh_token is not None:
            token = await client.refresh_token(url, refresh_token=refresh_token.get_secret_value())
        else:
            token = await client.fetch_token(url, grant_type="client_credentials")
    return dict(token)


def _new_client(provider: Provider, credentials: Credentials, timeout: float) -> AsyncOAuth2Client:
    secret = credentials.client_secret.get_secret_value() if credentials.client_secret else None
    return _client_class()(
        client_id=credentials.client_id,
        client_secret=secret,
        token_endpoint_auth_method=provider.client_auth_method,
        scope=" ".join(provider.scopes) or None,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )


@functools.cache
def _client_class() -> type[AsyncOAuth2Client]:
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Auth

    class ResponseAsSent(OAuth2Auth):  # type: ignore[misc]
        # authlib's OAuth2Token int()s expires_in as it stores the answer: "60.5" or "abc" failed the
        # request, and a list, an object or Infinity raised TypeError/OverflowError out of it. The
        # answer is kept as sent; shared.token_expiry reads expires_in (and the JWT's exp) instead.
        def set_token(self, token: dict[str, Any]) -> None:
            self.token = dict(token)

    class Client(AsyncOAuth2Client):  # type: ignore[misc]
        token_auth_class = ResponseAsSent

    return Client


def _classify(exc: Exception, timeout: float, secrets: list[str]) -> TokenRequestError:
    import httpx2
    from authlib.integrations.httpx_client import OAuthError

    if isinstance(exc, OAuthError):
        code = str(exc.error or "oauth_error")
        detail = _scrub(f"token endpoint refused: {code}: {exc.description or ''}".rstrip(": "), secrets)
        permanent = code in PERMANENT_ERRORS
        return TokenRequestError(code if permanent else "refused", detail, permanent=permanent)
    if isinstance(exc, httpx2.TimeoutException):
        return TokenRequestError("timeout", f"token endpoint timed out after {timeout}s", permanent=False)
    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
        return TokenRequestError("http_error", f"token endpoint answered HTTP {status}", permanent=False)
    if isinstance(exc, httpx2.HTTPError):
        return TokenRequestError("unreachable", f"token endpoint unreachable: {type(exc).__name__}", permanent=False)
    return TokenRequestError("invalid_response", _scrub(str(exc), secrets), permanent=False)


def _issued(
    provider: Provider, body: dict[str, Any], old_refresh: SecretStr | None, started: float, secrets: list[str]
) -> IssuedToken:
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        keys = ", ".join(sorted(k for k in body if k != "refresh_token")) or "none"
        raise TokenRequestError(
            "invalid_response", _scrub(f"token response has no access_token (keys: {keys})", secrets), permanent=False
        )
    if not _B64TOKEN.fullmatch(access):
        # It goes into an Authorization header: CR, LF or spaces would break (or inject into) every request.
        raise TokenRequestError(
            "invalid_response", "token response's access_token is not a bearer token (RFC 6750)", permanent=False
        )
    token_type = body.get("token_type") or "Bearer"
    if not isinstance(token_type, str) or not _AUTH_SCHEME.fullmatch(token_type):
        # It is the Authorization header's scheme: a space, CR, LF or a JSON list would break every request.
        raise TokenRequestError(
            "invalid_response", "token response's token_type is not an auth-scheme (RFC 9110)", permanent=False
        )
    if positive_seconds(body.get("expires_in")) is None:
        log.warning(
            "token response without a usable expires_in; using the JWT's exp or the provider default",
            default_expires_in=provider.default_expires_in,
        )
    new_refresh = body.get("refresh_token")
    return IssuedToken(
        access_token=SecretStr(access),
        # A refresh response without a refresh token means: keep using the old one.
        refresh_token=SecretStr(new_refresh) if isinstance(new_refresh, str) and new_refresh else old_refresh,
        token_type=token_type,
        issued_at=started,
        expires_at=expires_at(access, body.get("expires_in"), started, float(provider.default_expires_in)),
    )


def secret_forms(credentials: Credentials, refresh_token: SecretStr | None) -> list[str]:
    """Every spelling in which a provider could echo a secret it was sent, longest first.

    A token endpoint that repeats its request in an error (a form body, a Basic header) does not
    repeat the bare secret: the form is URL-encoded (``+``, ``%2B`` or ``%2b``: the scrub ignores
    case) and the Basic header is base64 of ``client_id:client_secret``, raw as authlib sends it
    or URL-encoded first as RFC 6749 §2.3.1 says.
    """
    raw = [*credentials.secrets(), *([refresh_token.get_secret_value()] if refresh_token else [])]
    forms = {f for secret in raw if secret for f in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret))}
    forms.update(f.replace("/", "\\/") for f in list(forms))  # JSON may escape '/'
    secret = credentials.client_secret.get_secret_value() if credentials.client_secret else ""
    if secret:
        client_id = credentials.client_id
        for text in (f"{client_id}:{secret}", f"{quote_plus(client_id)}:{quote_plus(secret)}"):
            for charset in ("utf-8", "latin-1"):  # authlib encodes latin-1; others UTF-8
                try:
                    encoded = base64.b64encode(text.encode(charset)).decode()
                except UnicodeEncodeError:
                    continue
                forms.update({encoded, encoded.rstrip("=")})
    return sorted(forms, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    """Third parties sometimes echo what they were sent; never pass a secret on, in any spelling."""
    if secrets:
        text = re.sub("|".join(map(re.escape, secrets)), "***", text, flags=re.IGNORECASE)
    return text[:300]
