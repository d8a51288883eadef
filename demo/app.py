"""A demo third party for ``make run`` and ``docker compose up``: an OAuth2 token endpoint and an API.

It behaves like the providers Conduit talks to: client credentials and
refresh-token grants (with rotation), short-lived bearer tokens checked on
every API call, JSON resources, and daily exports of every module of the
catalogue (``GET /api/exports/{module}?date=YYYY-MM-DD``), deterministic and
of a size you set (see :mod:`demo.exports`). Tokens live in memory.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from demo.exports import build_zip
from shared.modules import Catalogue, catalogue


class DemoSettings(BaseSettings):
    """``CONDUIT_DEMO_*``: where the demo listens, its clients and how long its tokens live."""

    model_config = SettingsConfigDict(env_prefix="CONDUIT_DEMO_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(default=8090, ge=0, le=65535)
    # "client_id=secret;client_id2=secret2"
    clients: str = "acme-demo=acme-demo-secret;globex-demo=globex-demo-secret"
    token_lifetime: int = Field(default=3600, gt=0)
    # Rows in every export, unless the module has its own count or the request asks (?rows=N).
    export_rows: int = Field(default=1000, ge=0)
    # Per-module counts, e.g. CONDUIT_DEMO_EXPORT_ROWS_PER_MODULE='{"transactions": 1000000}'.
    export_rows_per_module: dict[str, int] = Field(default_factory=dict)
    # The most rows a request may ask for with ?rows=.
    export_max_rows: int = Field(default=10_000_000, ge=0)
    # Built exports are kept here and served again (building a million rows takes a while).
    export_cache_dir: Path = Path(tempfile.gettempdir()) / "conduit-demo-exports"


@dataclass
class DemoState:
    clients: dict[str, str]
    lifetime: int
    settings: DemoSettings
    modules: Catalogue
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    issued: int = 0
    building: dict[Path, asyncio.Lock] = field(default_factory=dict)


STATE = web.AppKey("state", DemoState)


def parse_clients(spec: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in spec.split(";") if "=" in item)
    return {client.strip(): secret.strip() for client, secret in pairs}


def create_app(settings: DemoSettings | None = None) -> web.Application:
    settings = settings or DemoSettings()
    app = web.Application()
    app[STATE] = DemoState(parse_clients(settings.clients), settings.token_lifetime, settings, catalogue())
    app.router.add_get("/health_check", _ok)
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/api/resources/{id}", resource)
    app.router.add_get("/api/resources", resources)
    app.router.add_get("/api/exports/{module}", export)
    return app


async def _ok(_: web.Request) -> web.Response:
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


async def export(request: web.Request) -> web.StreamResponse:
    """A module's export for a day: ``{"module_name": ..., "data": <base64 of a zip holding one CSV>}``, streamed."""
    client = _caller(request)
    state = request.app[STATE]
    name = request.match_info["module"]
    if name not in state.modules:
        return web.json_response({"error": "not_found", "message": f"no module {name[:64]!r}"}, status=404)
    try:
        day = dt.date.fromisoformat(request.query.get("date", ""))
        rows = int(
            request.query.get("rows", state.settings.export_rows_per_module.get(name, state.settings.export_rows))
        )
    except ValueError:
        return web.json_response({"error": "bad_request", "message": "date=YYYY-MM-DD and rows=N"}, status=400)
    if not 0 <= rows <= state.settings.export_max_rows:
        return web.json_response({"error": "bad_request", "message": "rows out of range"}, status=400)
    path = await _built(state, name, client, day.isoformat(), rows)
    return await _stream_envelope(request, name, path)


async def _built(state: DemoState, name: str, client: str, day: str, rows: int) -> Path:
    """Build the zip once, in a thread (it takes seconds for large exports), however many ask at once."""
    key = state.settings.export_cache_dir / f"{client}-{name}-{day}-{rows}.zip"
    async with state.building.setdefault(key, asyncio.Lock()):
        module = state.modules.get(name)
        return await asyncio.to_thread(build_zip, module, client, day, rows, state.settings.export_cache_dir)


_B64_READ = 3 * (64 << 10)  # a multiple of 3, so each piece encodes without padding


async def _stream_envelope(request: web.Request, name: str, path: Path) -> web.StreamResponse:
    head = b'{"module_name": "' + name.encode() + b'", "data": "'
    tail = b'"}'
    size = path.stat().st_size
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(head) + 4 * ((size + 2) // 3) + len(tail)
    await response.prepare(request)
    await response.write(head)
    with path.open("rb") as zipped:
        while piece := zipped.read(_B64_READ):
            await response.write(base64.b64encode(piece))
    await response.write(tail)
    await response.write_eof()
    return response


def main() -> None:
    settings = DemoSettings()
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None, print=None)
