"""A demo third party for ``make run`` and ``docker compose up``: an OAuth2 token endpoint and an API.

It behaves like the providers Conduit talks to: client credentials and
refresh-token grants (with rotation), short-lived bearer tokens checked on
every API call, and JSON resources. It keeps everything in memory.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DemoSettings(BaseSettings):
    """``CONDUIT_DEMO_*``: where the demo listens, its clients and how long its tokens live."""

    model_config = SettingsConfigDict(env_prefix="CONDUIT_DEMO_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(default=8090, ge=0, le=65535)
    # "client_id=secret;client_id2=secret2"
    clients: str = "acme-demo=acme-demo-secret;globex-demo=globex-demo-secret"
    token_lifetime: int = Field(default=3600, gt=0)


@dataclass
class DemoState:
    clients: dict[str, str]
    lifetime: int
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    issued: int = 0


STATE = web.AppKey("state", DemoState)


def parse_clients(spec: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in spec.split(";") if "=" in item)
    return {client.strip(): secret.strip() for client, secret in pairs}


def create_app(settings: DemoSettings | None = None) -> web.Application:
    settings = settings or DemoSettings()
    app = web.Application()
    app[STATE] = DemoState(parse_clients(settings.clients), settings.token_lifetime)
    app.router.add_get("/health_check", lambda _: _ok())
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/api/resources/{id}", resource)
    app.router.add_get("/api/resources", resources)
    return app


async def _ok() -> web.Response:
    return web.Response(text="ok")


def _client(request: web.Request, form: dict[str, str], state: DemoState) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Basic "):
        client_id, _, secret = base64.b64decode(auth[6:]).decode(errors="replace").partition(":")
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    expected = state.clients.get(client_id)
    return client_id if expected is not None and secrets.compare_digest(expected, secret) else None


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = {k: str(v) for k, v in (await request.post()).items()}
    client_id = _client(request, form, state)
    if client_id is None:
        return web.json_response({"error": "invalid_client"}, status=401)
    body: dict[str, object] = {"token_type": "Bearer", "expires_in": state.lifetime}
    grant = form.get("grant_type")
    if grant == "refresh_token":
        old = form.get("refresh_token", "")
        if state.refresh_tokens.pop(old, None) != client_id:
            return web.json_response({"error": "invalid_grant"}, status=400)
        body["refresh_token"] = _new_refresh_token(state, client_id)
    elif grant != "client_credentials":
        return web.json_response({"error": "unsupported_grant_type"}, status=400)
    access = secrets.token_urlsafe(24)
    state.tokens[access] = (client_id, time.time() + state.lifetime)
    state.issued += 1
    body["access_token"] = access
    return web.json_response(body)


def _new_refresh_token(state: DemoState, client_id: str) -> str:
    value = secrets.token_urlsafe(24)
    state.refresh_tokens[value] = client_id
    return value


def _caller(request: web.Request) -> str:
    state = request.app[STATE]
    auth = request.headers.get("Authorization", "")
    entry = state.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
    if entry is None or entry[1] < time.time():
        raise web.HTTPUnauthorized(text='{"error": "invalid_token"}', content_type="application/json")
    return entry[0]


async def resource(request: web.Request) -> web.Response:
    client = _caller(request)
    return web.json_response(
        {"id": request.match_info["id"], "owner": client, "name": f"Resource {request.match_info['id']}"}
    )


async def resources(request: web.Request) -> web.Response:
    client = _caller(request)
    return web.json_response({"owner": client, "items": [{"id": i} for i in range(1, 11)]})


def main() -> None:
    settings = DemoSettings()
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None, print=None)
