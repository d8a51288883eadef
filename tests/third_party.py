"""A fake third party for tests: an OAuth2 token endpoint and an API, served for real on 127.0.0.1.

It records every call and can be told to fail in the ways real providers do
(HTML error pages, timeouts, refusals, 401/429/5xx, tokens of a few seconds).
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import OctKey
from multidict import CIMultiDict

# Marks a key to leave out of a token response (ThirdParty.body_overrides).
DROP = object()
_JWT_KEY = OctKey.generate_key(256)


@dataclass
class TokenCall:
    grant_type: str
    client_id: str
    refresh_token: str | None
    at: float


@dataclass
class ApiCall:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    tenant_client: str | None
    # Every header line as received, in order, duplicates kept (``headers`` keeps one per name).
    header_lines: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ThirdParty:
    clients: dict[str, str] = field(default_factory=dict)
    lifetime: float = 3600
    # ok | html | empty | no_access_token | no_expires_in | invalid_client | invalid_grant | server_error | slow
    # | echo_request (refuses, repeating the request's Authorization header and form)
    token_mode: str = "ok"
    token_delay: float = 0.0
    rotate_refresh_tokens: bool = True
    token_calls: list[TokenCall] = field(default_factory=list)
    api_calls: list[ApiCall] = field(default_factory=list)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    refuse_all_tokens: bool = False
    # Access tokens as signed JWTs whose exp is this many seconds after issue (expires_in still says
    # `lifetime`): the token stops working at exp, as a provider's resource server would have it.
    jwt_lifetime: float | None = None
    # Appended to every opaque access token: a base64 tail ("+/9=") makes each way of escaping it differ.
    token_suffix: str = ""
    # Put into every successful token response (DROP removes the key): junk expires_in and the like.
    body_overrides: dict[str, Any] = field(default_factory=dict)
    # API calls that came with a token this endpoint issued, after it expired: how late each was.
    expired_calls: list[float] = field(default_factory=list)
    # The caller's address of every API call: one port for two calls means a kept-alive connection.
    api_peers: list[tuple[str, int]] = field(default_factory=list)
    # Set whenever an API call arrives, so tests can wait for "the request reached the upstream".
    api_called: asyncio.Event = field(default_factory=asyncio.Event)
    # Ends a stalled answer early (the test is done with it).
    unstall: asyncio.Event = field(default_factory=asyncio.Event)
    # Response header lines per path (decoded, under the API base) of the ``echo-cache/`` routes:
    # how a test makes each cacheable or not.
    cache_profiles: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    url: str = ""

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth/token"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def seed_refresh_token(self, client_id: str) -> str:
        token = "rt-" + secrets.token_urlsafe(16)
        self.refresh_tokens[token] = client_id
        return token

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/oauth/token", self._token)
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        return app

    def _client(self, request: web.Request, form: dict[str, str]) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id if self.clients.get(client_id) == secret else None

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if self.token_mode == "echo_request":
            # A careless provider repeating what it was sent: the Basic header and the form, as received.
            echoed = f"{request.headers.get('Authorization', '')} {await request.text()}"
            return web.json_response({"error": "invalid_client", "error_description": echoed}, status=401)
        form = dict(await request.post())  # type: ignore[arg-type]
        grant = str(form.get("grant_type", ""))
        client_id = self._client(request, form)  # type: ignore[arg-type]
        self.token_calls.append(TokenCall(grant, client_id or "?", form.get("refresh_token"), time.time()))  # type: ignore[arg-type]
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        failure = self._token_failure()
        if failure is not None:
            return failure
        if client_id is None:
            return web.json_response({"error": "invalid_client", "error_description": "bad client"}, status=401)
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": self.lifetime}
        if grant == "refresh_token":
            old = str(form.get("refresh_token", ""))
            if self.refresh_tokens.get(old) != client_id:
                return web.json_response(
                    {"error": "invalid_grant", "error_description": "unknown refresh token"}, status=400
                )
            if self.rotate_refresh_tokens:
                del self.refresh_tokens[old]
                body["refresh_token"] = self.seed_refresh_token(client_id)
        elif grant != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        access, expires = self._new_access_token(client_id)
        self.tokens[access] = (client_id, expires)
        body["access_token"] = access
        if self.token_mode == "no_expires_in":
            del body["expires_in"]
        return web.json_response(self._overridden(body))

    def _overridden(self, body: dict[str, Any]) -> dict[str, Any]:
        body = body | self.body_overrides
        return {key: value for key, value in body.items() if value is not DROP}

    def _new_access_token(self, client_id: str) -> tuple[str, float]:
        now = time.time()
        if self.jwt_lifetime is None:
            return f"at-{client_id}-" + secrets.token_urlsafe(12) + self.token_suffix, now + float(self.lifetime)
        exp = round(now + self.jwt_lifetime, 3)  # RFC 7519 NumericDate may have a fraction
        claims = {"sub": client_id, "iat": int(now), "exp": exp, "jti": secrets.token_urlsafe(8)}
        return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, _JWT_KEY), exp

    def _token_failure(self) -> web.StreamResponse | None:
        mode = self.token_mode
        if mode == "html":
            return web.Response(text="<html><body>Bad gateway</body></html>", content_type="text/html", status=502)
        if mode == "html200":
            return web.Response(text="<html><body>Login</body></html>", content_type="text/html")
        if mode == "empty":
            return web.Response(body=b"", content_type="application/json")
        if mode == "header_breaking_token":
            return web.json_response({"access_token": "abc\r\nX-Evil: 1", "token_type": "Bearer", "expires_in": 60})
        if mode == "no_access_token":
            return web.json_response({"token_type": "Bearer", "expires_in": 60})
        if mode in ("invalid_client", "invalid_grant"):
            return web.json_response({"error": mode, "error_description": "refused"}, status=400)
        if mode == "server_error":
            return web.json_response({"error": "server_error"}, status=503)
        return None

    def valid(self, header: str | None) -> str | None:
        if not header or not header.startswith("Bearer "):
            return None
        token = header[7:]
        entry = self.tokens.get(token)
        if entry is None or token in self.revoked or self.refuse_all_tokens:
            return None
        late = time.time() - entry[1]
        if late > 0:
            self.expired_calls.append(late)
            return None
        return entry[0]

    async def _api(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        client = self.valid(request.headers.get("Authorization"))
        body = await request.read() if tail != "upload" else b""
        lines = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers]
        self.api_calls.append(ApiCall(request.method, request.raw_path, dict(request.headers), body, client, lines))
        self.api_peers.append(request.transport.get_extra_info("peername") if request.transport else ("", 0))
        self.api_called.set()
        if client is None:
            return web.json_response({"error": "invalid_token"}, status=401)
        if tail.startswith("echo-cache/"):
            return await _echo_cache(request, client, self.cache_profiles.get("/" + tail, []))
        if tail.startswith("echo-token/"):
            return await _echo_token(request, *tail.split("/")[1:4])
        return await self._route(request, tail, client)

    async def _route(self, request: web.Request, tail: str, client: str) -> web.StreamResponse:
        if tail.startswith("status/"):
            status = int(tail.split("/")[1])
            return web.json_response({"status": status}, status=status, headers={"Retry-After": "7"})
        if tail == "slow":
            await asyncio.sleep(float(request.query.get("delay", "5")))
            return web.json_response({"slow": True})
        if tail == "big":
            return await self._big(request, int(request.query["size"]))
        if tail == "pattern":
            return await self._pattern(request, int(request.query["size"]), int(request.query.get("cut", "-1")))
        if tail == "upload":
            total = 0
            async for chunk in request.content.iter_chunked(1 << 16):
                total += len(chunk)
            return web.json_response({"received": total})
        if tail == "hops":
            # Hop-by-hop response headers, the connection-specific one named in Connection: none may reach the caller.
            hops = {"Connection": "keep-alive, X-Up-Hop", "X-Up-Hop": "1", "Keep-Alive": "timeout=5", "Trailer": "X-T"}
            return web.json_response({"hops": True}, headers=hops | {"Proxy-Authenticate": "Basic"})
        if tail == "redirect":
            raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
        if tail == "cached":
            headers = {"Cache-Control": request.query.get("cc", "max-age=60")}
            return web.json_response({"client": client, "n": len(self.api_calls)}, headers=headers)
        return web.json_response({"client": client, "path": request.raw_path, "method": request.method})

    async def _big(self, request: web.Request, size: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        if request.method == "HEAD":
            await response.write_eof()
            return response
        chunk = b"x" * (1 << 16)
        sent = 0
        while sent < size:
            part = chunk[: min(len(chunk), size - sent)]
            await response.write(part)
            sent += len(part)
        await response.write_eof()
        return response

    async def _pattern(self, request: web.Request, size: int, cut: int) -> web.StreamResponse:
        """``pattern_bytes(size)`` in uneven writes; with ``cut`` the connection drops after that many bytes
        (``stall=S``: it goes quiet for S seconds instead)."""
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        body = pattern_bytes(size)
        end = size if cut < 0 else cut
        sent = 0
        try:
            while sent < end:
                step = min(end - sent, 40_000 + sent % 7_919)
                await response.write(body[sent : sent + step])
                sent += step
        except ConnectionError:
            # The proxy hung up (its caller left): a provider would just stop, with nothing to log.
            return response
        if cut < 0:
            await response.write_eof()
            return response
        if "stall" in request.query:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.unstall.wait(), float(request.query["stall"]))
        assert request.transport is not None
        request.transport.abort()
        return response


def echo_of(
    client: str, method: str, path_qs: str, body: bytes, headers: Any, profile: list[tuple[str, str]]
) -> dict[str, Any]:
    """Everything an ``echo-cache/`` answer depends on: what the cache keys on, and the headers its Vary names."""
    varied = {
        name.strip().lower()
        for value in (v for k, v in profile if k.lower() == "vary")
        for name in value.split(",")
        if name.strip()
    }
    return {
        "client": client,
        "method": method,
        "path_qs": path_qs,
        "body": body.decode("latin-1"),
        "range": ", ".join(headers.getall("Range", ())),
        # Lines of one field are one comma-separated list (RFC 9110 §5.3): a server reads them joined.
        "headers": {
            name: ", ".join(headers.getall(name, ())) for name in sorted(varied | {"accept", "accept-encoding"})
        },
    }


async def _echo_cache(request: web.Request, client: str, profile: list[tuple[str, str]]) -> web.StreamResponse:
    """A deterministic answer to exactly what was asked, plus a nonce naming this one upstream call."""
    answer = echo_of(client, request.method, request.raw_path, await request.read(), request.headers, profile)
    answer["nonce"] = secrets.token_hex(8)
    status = 206 if "Range" in request.headers else 200
    return web.json_response(answer, status=status, headers=CIMultiDict(profile))


# How a careless provider repeats the Authorization header it got: as is, URL-encoded, or in JSON.
ECHOES = {
    "raw": lambda value: value,
    "quote": lambda value: quote(value, safe=""),
    "quote-lower": lambda value: re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(value, safe="")),
    "quote_plus": quote_plus,
    "json": lambda value: value.replace("/", "\\/"),
}


async def _echo_token(request: web.Request, framing: str, spelling: str, status: str) -> web.StreamResponse:
    """``echo-token/<framing>/<spelling>/<status>``: the Authorization header repeated in two headers and the body.

    The body is ``sized`` (small, with its length), ``chunked`` (written a few bytes at a time, so the
    token is cut between reads) or ``large`` (chunked too, past the proxy's buffer limit).
    """
    echoed = ECHOES[spelling](request.headers["Authorization"])
    headers = {
        "WWW-Authenticate": f'Bearer error="invalid_token", error_description="not valid: {echoed}"',
        "X-Debug-Authorization": echoed,
        "Cache-Control": "max-age=60",
        "Content-Type": "application/json",
    }
    pad = " " * (100_000 if framing == "large" else 0)
    body = f'{{"error": "invalid_token",{pad} "got": "{echoed}", "again": "{echoed}"}}'.encode()
    if framing == "sized":
        return web.Response(status=int(status), body=body, headers=headers)
    response = web.StreamResponse(status=int(status), headers=headers)
    await response.prepare(request)
    step = 7 if framing == "chunked" else 40_000
    for at in range(0, len(body), step):
        await response.write(body[at : at + step])
    await response.write_eof()
    return response


def pattern_bytes(size: int) -> bytes:
    """Each 4-byte word holds its own index: any lost, doubled or swapped piece of a body shows."""
    return array.array("I", range(size // 4 + 1)).tobytes()[:size]


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve an aiohttp app on a free port (over TLS with ``tls``); yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if tls else 'http'}://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running_third_party(**kwargs: Any) -> AsyncIterator[ThirdParty]:
    party = ThirdParty(**kwargs)
    async with serve(party.app()) as url:
        party.url = url
        yield party
