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

from devtools.redis_lease import lease_first, root_url
from devtools.servers import ensure_servers
from shared.logging import configure_logging
from tests.private_redis import PrivateRedis

# Databases test sessions may lease: 0 holds the leases and `make run`, 11 and 12 the benches.
_LEASABLE_DBS = (10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 14, 15, 13)
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
def redis_url(server_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis database of this test session's own, flushed per test by ``redis``.

    Two sessions on one Redis (two checkouts, ``make test``'s worker processes, a helper's run beside CI)
    would flush each other's tokens and arq jobs: each session leases a database number in database 0,
    renews the lease while it runs and gives it back at the end, so a killed session's lease lapses within
    a minute. When every number is leased, the session gets a redis-server of its own rather than share.
    ``CONDUIT_TEST_REDIS_DB`` pins one.
    """
    root = root_url(server_urls["CONDUIT_REDIS_URL"])
    if os.environ.get("CONDUIT_TEST_REDIS_DB"):
        yield f"{root}/{os.environ['CONDUIT_TEST_REDIS_DB']}"
        return
    with lease_first(root, _LEASABLE_DBS) as db:
        if db is not None:
            yield f"{root}/{db}"
            return
    own = PrivateRedis(tmp_path_factory.mktemp("own-redis"))
    own.start()
    try:
        yield own.url
    finally:
        own.stop()


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
