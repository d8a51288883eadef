"""Signing in with the company's OpenID Connect provider: authorization code with PKCE, through authlib.

The flow: ``start`` makes a state, a nonce and a PKCE verifier, keeps them in
Redis for ten minutes and sends the browser to the provider; ``finish`` takes
them back (once: GETDEL), exchanges the code with the verifier, checks the ID
token's signature (the provider's JWKS), issuer, audience, expiry and nonce
(joserfc, which authlib is built on), and decides the role from the allow
lists. Nothing of the provider's tokens is kept: the session holds a name and
a role.

The pending record is sealed as sessions are (``shared.crypto.BoundSealer``, a
purpose of its own, its Redis key as associated data, its expiry inside): anyone
able to write Redis could otherwise plant one for a state of their choosing
(their own PKCE verifier, nonce, page to go back to and browser digest) or move
one to another state. One that does not open for its key, is malformed or has
expired is "not known", as a missing one is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import orjson
from redis.asyncio import Redis

from services.console.sessions import Role
from services.console.settings import ConsoleSettings, split
from shared.crypto import BoundSealer, RecordUnreadable
from shared.logging import get_logger
from shared.redis_keys import PREFIX

log = get_logger(__name__)
_PENDING_TTL = 600
_METADATA_TTL = 3600.0


class SignInRefused(Exception):
    """The provider said no, or said yes for someone not on the allow lists; the message is safe to show."""


class SignInUnknown(SignInRefused):
    """The callback's state names no pending sign-in (expired, used, never started, or a record not ours)."""

    def __init__(self) -> None:
        super().__init__("this sign-in is not known (expired, already used or not started here); start again")


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role


class Oidc:
    def __init__(self, settings: ConsoleSettings, redis: Redis, sealer: BoundSealer) -> None:
        assert settings.console_oidc_issuer and settings.console_oidc_client_id
        self.settings = settings
        self.issuer = settings.console_oidc_issuer.rstrip("/")
        self.client_id = settings.console_oidc_client_id
        self.redirect_uri = urljoin(settings.console_public_url.rstrip("/") + "/", "login/callback")
        self.redis = redis
        self.sealer = sealer
        self._metadata: tuple[float, dict[str, Any]] | None = None

    def _client(self) -> Any:
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        secret = self.settings.console_oidc_client_secret
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=secret.get_secret_value() if secret else None,
            token_endpoint_auth_method="client_secret_post" if secret else "none",
            scope=self.settings.console_oidc_scopes,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=10.0,
            trust_env=False,
        )

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document, cached for an hour."""
        if self._metadata and self._metadata[0] > time.monotonic():
            return self._metadata[1]
        async with self._client() as client:
            answer = await client.request("GET", f"{self.issuer}/.well-known/openid-configuration", withhold_token=True)
            answer.raise_for_status()
            found: dict[str, Any] = answer.json()
        self._metadata = (time.monotonic() + _METADATA_TTL, found)
        return found

    async def start(self, next_path: str, browser: str) -> str:
        """Where to send the browser to sign in; ``browser`` is the secret its cookie holds (see ``finish``)."""
        from authlib.common.security import generate_token

        meta = await self.metadata()
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), generate_token(64)
        key = _key(state)
        pending = orjson.dumps({"verifier": verifier, "nonce": nonce, "next": next_path, "browser": _digest(browser),
                                "expires": time.time() + _PENDING_TTL})  # fmt: skip
        await self.redis.set(key, self.sealer.seal(pending, key.encode()), ex=_PENDING_TTL)
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
            )
        return str(url)

    async def finish(self, code: str, state: str, browser: str | None) -> tuple[Identity, str]:
        """The signed-in identity and the page to go back to.

        Only in the browser that started the sign-in (its cookie's secret): a callback URL is a
        valid code and state whoever opens it, so without this, anyone could stop at their own
        callback and have an operator's browser open it, signed in as them (RFC 6749 §10.12).
        """
        pending = await self._pending(state)
        if not browser or not hmac.compare_digest(_digest(browser), pending["browser"]):
            log.warning("oidc callback refused: the sign-in was started in another browser")
            raise SignInRefused("this sign-in was started in another browser; start again here")
        meta = await self.metadata()
        async with self._client() as client:
            try:
                token = await client.fetch_token(
                    meta["token_endpoint"],
                    code=code,
                    code_verifier=pending["verifier"],
                    grant_type="authorization_code",
                )
            except Exception as exc:  # authlib's OAuthError or a transport error: both mean "not signed in"
                log.warning("oidc code exchange failed", error=type(exc).__name__)
                raise SignInRefused("the identity provider did not accept the sign-in") from None
            jwks = (await client.request("GET", meta["jwks_uri"], withhold_token=True)).json()
        claims = self._claims(str(token.get("id_token", "")), jwks, pending["nonce"])
        return self._identity(claims), pending["next"]

    async def _pending(self, state: str) -> dict[str, Any]:
        key = _key(state)
        raw = await self.redis.getdel(key)  # a refused record goes too, so it is logged once
        if raw is None:
            raise SignInUnknown()
        try:
            pending = _pending_fields(orjson.loads(self.sealer.open(raw, key.encode())))
        except (RecordUnreadable, ValueError, TypeError, KeyError):
            # No state, code or record in the line: the record may be forged, and the state is a secret until used.
            log.warning("oidc callback refused: the pending sign-in does not open for its key (forged, moved, "
                        "tampered with or sealed under another CONDUIT_TOKEN_KEY)")  # fmt: skip
            raise SignInUnknown() from None
        if float(pending["expires"]) <= time.time():
            raise SignInUnknown()
        return pending

    def _claims(self, id_token: str, jwks: dict[str, Any], nonce: str) -> dict[str, Any]:
        from joserfc import jwt
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        try:
            keyset = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            decoded = jwt.decode(id_token, keyset, algorithms=["RS256", "ES256", "PS256"])
            jwt.JWTClaimsRegistry(
                leeway=30,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            log.warning("oidc id token refused", error=type(exc).__name__)
            raise SignInRefused("the identity provider's ID token did not check out") from None
        return dict(decoded.claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        s = self.settings
        # Only a verified address counts: where the provider leaves email_verified out, the address may be
        # one its user typed (Entra ID lets users set it), and anyone could name an admin's ("nOAuth").
        verified = claims.get("email_verified")
        email = str(claims.get("email") or "").lower() if verified is True or verified == "true" else ""
        raw_groups = claims.get(s.console_oidc_groups_claim) or []
        groups = {str(g) for g in (raw_groups if isinstance(raw_groups, list) else [raw_groups])}
        name = email or str(claims.get("preferred_username") or claims.get("sub"))
        lower = {e.lower() for e in split(s.console_admin_emails)}
        if email in lower or groups & split(s.console_admin_groups):
            return Identity(name, "admin")
        if email in {e.lower() for e in split(s.console_allowed_emails)} or groups & split(s.console_allowed_groups):
            return Identity(name, "readonly")
        log.info("oidc sign-in not allowed", user=name)
        raise SignInRefused(f"{name} is not allowed to use the console")


def _key(state: str) -> str:
    return f"{PREFIX}:console:oidc:{state[:100]}"


def _pending_fields(record: Any) -> dict[str, Any]:
    """The fields of an opened pending record (sealed by us, so only a key mix-up makes it malformed)."""
    fields = {name: record[name] for name in ("verifier", "nonce", "next", "browser", "expires")}
    if not all(isinstance(fields[n], str) for n in ("verifier", "nonce", "next", "browser")):
        raise ValueError("malformed pending sign-in")
    if isinstance(fields["expires"], bool) or not isinstance(fields["expires"], float | int):
        raise ValueError("malformed pending sign-in")
    return fields


def _digest(browser: str) -> str:
    # Only a digest is kept in Redis: reading Redis must not be enough to finish someone's sign-in.
    return hashlib.sha256(browser.encode()).hexdigest()
