"""Fixtures shared by every test: real Redis (a database of its own, flushed per test) and a token key.

The servers come from ``devtools.servers``: the ones configured in the
environment when reachable, else throwaway real servers it starts.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from redis.asyncio import Redis

from devtools.servers import ensure_servers

TEST_REDIS_DB = int(os.environ.get("CONDUIT_TEST_REDIS_DB", "13"))
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server_urls() -> Iterator[dict[str, str]]:
    urls = ensure_servers(ROOT / ".run" / "test-servers")
    yield urls


@pytest.fixture(scope="session")
def redis_url(server_urls: dict[str, str]) -> str:
    base = server_urls["CONDUIT_REDIS_URL"].rsplit("/", 1)
    root = base[0] if base[-1].isdigit() else server_urls["CONDUIT_REDIS_URL"].rstrip("/")
    return f"{root}/{TEST_REDIS_DB}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(scope="session")
def token_key() -> SecretStr:
    return SecretStr(Fernet.generate_key().decode())
