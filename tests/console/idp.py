"""A small OpenID Connect provider on 127.0.0.1 for the console's sign-in tests.

Discovery, an authorize endpoint that signs in ``user`` at once (no login form),
a token endpoint that checks the PKCE verifier against the challenge, and the
JWKS. It records what it got and can be told to hand out a bad ID token.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ID = "conduit-console"


@dataclass
class Idp:
    url: str = ""
    user: dict[str, Any] = field(default_factory=lambda: {"sub": "u1", "email": "ops@example.com", "groups": []})
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    wrong_audience: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/jwks", self.jwks)
        return app

    async def discovery(self, _: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.url, "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token", "jwks_uri": f"{self.url}/jwks",
            "code_challenge_methods_supported": ["S256"],
        })  # fmt: skip

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "challenge": q.get("code_challenge", ""), "method": q.get("code_challenge_method", ""),
            "nonce": q.get("nonce", ""), "redirect_uri": q.get("redirect_uri", ""), "client_id": q.get("client_id", ""),
        }  # fmt: skip
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}")

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        pending = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if pending is None or pending["method"] != "S256" or digest != pending["challenge"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims = {**self.user, "iss": self.url, "aud": "someone-else" if self.wrong_audience else CLIENT_ID,
                  "iat": now, "exp": now + 300, "nonce": pending["nonce"]}  # fmt: skip
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
        return web.json_response(
            {
                "access_token": "idp-access-" + secrets.token_hex(8),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            }  # fmt: skip
        )

    async def jwks(self, _: web.Request) -> web.Response:
        return web.json_response({"keys": [self.key.as_dict(private=False)]})


@asynccontextmanager
async def running_idp() -> AsyncIterator[Idp]:
    idp = Idp()
    runner = web.AppRunner(idp.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    idp.url = f"http://127.0.0.1:{port}"
    try:
        yield idp
    finally:
        await runner.cleanup()


def signing_in_with(idp: Idp, port: int) -> dict[str, Any]:
    """Console settings for signing in with ``idp`` only (no token), served on ``port`` at its own public URL."""
    return {
        "console_token": None,
        "console_oidc_issuer": idp.url,
        "console_oidc_client_id": CLIENT_ID,
        "console_port": port,
        "console_public_url": f"http://127.0.0.1:{port}",
    }


async def callback_url(session: Any, start: str) -> str:
    """The URL ``idp`` sends a sign-in back to, for a sign-in ``session`` (an aiohttp session) starts at ``start``."""
    async with session.get(start, allow_redirects=False) as started:
        authorize = started.headers["Location"]
    async with session.get(authorize, allow_redirects=False) as at_idp:
        return str(at_idp.headers["Location"])
