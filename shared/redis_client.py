"""Creating Redis clients the same way everywhere."""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(url: str, timeout: float) -> Redis:
    """A client with bounded waits, so a dead Redis turns into an error instead of a hang."""
    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    return client
