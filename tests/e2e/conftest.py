"""Fixtures for end-to-end tests: the fake third party and a proxy started as `conduit proxy`."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from devtools.processes import free_port
from tests.e2e.processes import CONDUIT, Service, Services, base_env
from tests.helpers import tenants_file
from tests.third_party import ThirdParty, running_third_party


@pytest.fixture
async def party() -> AsyncIterator[ThirdParty]:
    async with running_third_party() as tp:
        yield tp


@pytest.fixture
def proxy_process(
    party: ThirdParty, redis_url: str, redis: object, token_key: SecretStr, tmp_path: Path
) -> Callable[..., tuple[Services, Service]]:
    """Start `conduit proxy` for tenant acme against ``party``; options as arguments, settings as keywords."""

    def start(*options: str, **settings: str) -> tuple[Services, Service]:
        port = int(settings.pop("CONDUIT_PROXY_PORT", 0)) or free_port()
        env = base_env(
            CONDUIT_REDIS_URL=redis_url,
            CONDUIT_TENANTS_FILE=str(tenants_file(tmp_path, party, ["acme"])),
            CONDUIT_TOKEN_KEY=token_key.get_secret_value(),
            CONDUIT_PROXY_HOST="127.0.0.1",
            CONDUIT_PROXY_PORT=str(port),
            **settings,
        )
        services = Services(env, tmp_path)
        return services, services.start("proxy", "proxy", *options, ops_port=port)

    return start


@pytest.fixture
async def database_url(server_urls: dict[str, str]) -> AsyncIterator[str]:
    """A PostgreSQL schema of this test's own, migrated by `conduit migrate` as an operator would."""
    base = server_urls["CONDUIT_DATABASE_URL"]
    schema = f"e2e_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(base)
    await conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{base}{'&' if '?' in base else '?'}search_path={schema}"
    try:
        migrate = await asyncio.create_subprocess_exec(
            CONDUIT, "migrate", env=base_env(CONDUIT_DATABASE_URL=url), stdout=asyncio.subprocess.PIPE
        )
        output, _ = await migrate.communicate()
        assert migrate.returncode == 0, output
        yield url
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
