"""Fixtures shared by every test: real Redis (a database of its own, flushed per test) and a token key.

The servers come from ``devtools.servers``: the ones configured in the
environment when reachable, else throwaway real servers it starts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from devtools.servers import ensure_servers
from shared.logging import configure_logging

# Databases test sessions may lease: 0 holds the leases and `make run`, 11 and 12 the benches.
_LEASABLE_DBS = (10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 14, 15, 13)
_LEASE = "conduit:tests:redis-db:{}"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _logs_through_logging() -> None:
    """Logs as a process has them (structlog through logging, JSON lines), so caplog sees them.

    Loggers are not cached, so ``structlog.testing.capture_logs`` sees every logger whatever ran before.
    """
    configure_logging("INFO", json=True, cache=False)


@pytest.fixture(scope="session")
def server_urls() -> Iterator[dict[str, str]]:
    urls = ensure_servers(ROOT / ".run" / "test-servers")
    yield urls


@pytest.fixture(scope="session")
def redis_url(server_urls: dict[str, str]) -> Iterator[str]:
    """A Redis database of this test session's own, flushed per test by ``redis``.

    Two sessions on one Redis (two checkouts, a helper's run beside CI) would flush each other's
    tokens and arq jobs: each session leases a database number in database 0 and gives it back at
    the end (a crashed session's lease lapses in an hour). ``CONDUIT_TEST_REDIS_DB`` pins one.
    """
    base = server_urls["CONDUIT_REDIS_URL"].rsplit("/", 1)
    root = base[0] if base[-1].isdigit() else server_urls["CONDUIT_REDIS_URL"].rstrip("/")
    if os.environ.get("CONDUIT_TEST_REDIS_DB"):
        yield f"{root}/{os.environ['CONDUIT_TEST_REDIS_DB']}"
        return
    leases = SyncRedis.from_url(f"{root}/0")
    token = secrets.token_hex(8)
    db = next((n for n in _LEASABLE_DBS if leases.set(_LEASE.format(n), token, nx=True, ex=3600)), _LEASABLE_DBS[0])
    try:
        yield f"{root}/{db}"
    finally:
        if leases.get(_LEASE.format(db)) == token.encode():
            leases.delete(_LEASE.format(db))
        leases.close()


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
