"""Console fixtures: a migrated database, real Redis, a tenants file, and the console serving on 127.0.0.1."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from services.console.app import create_app
from services.console.settings import ConsoleSettings
from tests.importer.conftest import (  # noqa: F401
    Database,
    database_url,
    db,
    exports,
    importer,
    migrated_database,
    migrated_databases,
    write_tenants,
)

ADMIN_TOKEN = "console-admin-token-9f3b"
READONLY_TOKEN = "console-readonly-token-77aa"


@dataclass
class Console:
    url: str
    settings: ConsoleSettings
    app: web.Application

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(self.url, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def signed_in(self, token: str = ADMIN_TOKEN) -> tuple[aiohttp.ClientSession, str]:
        """A client signed in with ``token`` and its CSRF token."""
        client = self.session()
        async with client.get("/login") as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert csrf is not None
        async with client.post("/login", data={"csrf": csrf[1], "token": token, "next": "/"}) as answer:
            assert answer.status == 200, await answer.text()
            html = await answer.text()
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        assert found is not None
        return client, found[1]


@asynccontextmanager
async def serve_console(settings: ConsoleSettings) -> AsyncIterator[Console]:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", settings.console_port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Console(f"http://127.0.0.1:{port}", settings, app)
    finally:
        await runner.cleanup()


@pytest.fixture
def console_settings(
    db: Database,  # noqa: F811 - the importer's fixture, imported above
    redis_url: str,
    token_key: SecretStr,
    tmp_path: Path,
) -> Callable[..., ConsoleSettings]:
    def make(**overrides: Any) -> ConsoleSettings:
        values: dict[str, Any] = {
            "redis_url": redis_url, "database_url": db.url, "token_key": token_key,
            "tenants_file": write_tenants(tmp_path), "console_token": SecretStr(ADMIN_TOKEN),
            "console_readonly_token": SecretStr(READONLY_TOKEN), "console_push_interval": 0.05, "console_port": 0,
        }  # fmt: skip
        return ConsoleSettings(**{**values, **overrides})

    return make


@pytest.fixture
async def console(console_settings: Callable[..., ConsoleSettings], redis: Any) -> AsyncIterator[Console]:
    async with serve_console(console_settings()) as running:
        yield running
