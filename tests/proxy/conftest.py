"""Fixtures for the proxy: the fake third party, a tenants file, and the proxy itself on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from pydantic import SecretStr
from redis.asyncio import Redis

from services.auth_proxy.app import create_app, running_proxy
from services.auth_proxy.settings import ProxySettings
from shared.crypto import Sealer
from shared.refresh import Refresher
from shared.tenants import load_tenants
from shared.token_store import TokenStore
from tests.helpers import tenants_file
from tests.third_party import ThirdParty, running_third_party


@dataclass
class Proxy:
    url: str
    party: ThirdParty
    session: aiohttp.ClientSession
    settings: ProxySettings
    refresher: Refresher

    async def get(self, path: str, tenant: str | None = "acme", **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("GET", path, tenant, **kwargs)

    async def request(
        self, method: str, path: str, tenant: str | None = "acme", **kwargs: Any
    ) -> aiohttp.ClientResponse:
        headers = dict(kwargs.pop("headers", {}))
        if tenant is not None:
            headers["X-Tenant-ID"] = tenant
        return await self.session.request(method, self.url + path, headers=headers, **kwargs)


@pytest.fixture
async def party() -> AsyncIterator[ThirdParty]:
    async with running_third_party(lifetime=60) as tp:
        yield tp


@pytest.fixture
def start_proxy(redis: Redis, redis_url: str, token_key: SecretStr, tmp_path: Path) -> Callable[..., Any]:
    """Start a proxy in this event loop against ``party``; settings overrides as keyword arguments."""

    @asynccontextmanager
    async def start(party: ThirdParty, tenants: list[str] | None = None, **overrides: Any) -> AsyncIterator[Proxy]:
        path = tenants_file(
            tmp_path, party, tenants or ["acme", "globex"], extra_providers=overrides.pop("extra", None)
        )
        if "api_base_url" in overrides:
            # The API elsewhere than the token endpoint (over TLS, say).
            data = yaml.safe_load(path.read_text())
            data["providers"]["demo"]["api_base_url"] = overrides.pop("api_base_url")
            path.write_text(yaml.safe_dump(data))
        settings = ProxySettings(
            redis_url=overrides.pop("redis_url", redis_url),
            tenants_file=path,
            token_key=token_key,
            proxy_access_log=True,
            token_request_timeout=1.0,
            **overrides,
        )
        config = load_tenants(path)
        refresher = Refresher(TokenStore(redis, Sealer(token_key)), config, settings.refresh_policy())
        async with (
            running_proxy(create_app(settings, config)) as url,
            aiohttp.ClientSession(auto_decompress=False) as session,
        ):
            yield Proxy(url, party, session, settings, refresher)

    return start


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any], party: ThirdParty) -> AsyncIterator[Proxy]:
    async with start_proxy(party) as running:
        yield running
