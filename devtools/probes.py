"""Quick, real reachability checks: a Redis PING and a PostgreSQL login."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import redis

T = TypeVar("T")


def redis_reachable(url: str, timeout: float = 1.0) -> bool:
    """True if the Redis at `url` answers PING within `timeout` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False
    finally:
        client.close()


def postgres_reachable(url: str, timeout: float = 2.0) -> bool:
    """True if a connection to the PostgreSQL database at `url` succeeds within `timeout` seconds."""
    try:
        run_sync(_connect_and_close(url, timeout))
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return True


async def _connect_and_close(url: str, timeout: float) -> None:
    connection = await asyncpg.connect(url, timeout=timeout)
    await connection.close()


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to completion, also when the caller is itself inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # asyncio.run refuses to nest; a fixture calling us from async code gets a private loop in a thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
