"""Fixtures shared by every test: real Redis (a database of its own, flushed per test) and a token key.

The servers come from ``devtools.servers``: the ones configured in the
environment when reachable, else throwaway real servers it starts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from devtools.servers import ensure_servers
from shared.logging import configure_logging
from tests.private_redis import PrivateRedis

# Databases test sessions may lease: 0 holds the leases and `make run`, 11 and 12 the benches.
_LEASABLE_DBS = (10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 14, 15, 13)
_LEASE = "conduit:tests:redis-db:{}"
_LEASE_SECONDS = 60
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
    base = server_urls["CONDUIT_REDIS_URL"].rsplit("/", 1)
    root = base[0] if base[-1].isdigit() else server_urls["CONDUIT_REDIS_URL"].rstrip("/")
    if os.environ.get("CONDUIT_TEST_REDIS_DB"):
        yield f"{root}/{os.environ['CONDUIT_TEST_REDIS_DB']}"
        return
    leases = SyncRedis.from_url(f"{root}/0")
    token = secrets.token_hex(8)
    db = next((n for n in _LEASABLE_DBS if leases.set(_LEASE.format(n), token, nx=True, ex=_LEASE_SECONDS)), None)
    if db is None:
        leases.close()
        directory = tmp_path_factory.mktemp("own-redis")
        own = PrivateRedis(directory)
        own.start()
        try:
            yield own.url
        finally:
            own.stop()
        return
    done = threading.Event()
    renewer = threading.Thread(target=_renew, args=(leases, _LEASE.format(db), token, done), daemon=True)
    renewer.start()
    try:
        yield f"{root}/{db}"
    finally:
        done.set()
        renewer.join()
        if leases.get(_LEASE.format(db)) == token.encode():
            leases.delete(_LEASE.format(db))
        leases.close()


def _renew(leases: SyncRedis, key: str, token: str, done: threading.Event) -> None:
    while not done.wait(_LEASE_SECONDS / 4):
        with contextlib.suppress(RedisError):
            if leases.get(key) == token.encode():
                leases.expire(key, _LEASE_SECONDS)


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
