"""Creating Redis clients the same way everywhere."""

from __future__ import annotations

from redis.asyncio import Redis

from shared.redis_connect import connect
from shared.redis_location import RedisLocation


def create_redis(url: str, timeout: float, location: RedisLocation | None = None) -> Redis:
    """A client with bounded waits, so a dead Redis turns into an error instead of a hang.

    `location` (``settings.redis_location()``): a CA file for rediss://, or the Sentinels naming the master.
    """
    client: Redis = connect(
        url,
        location or RedisLocation(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    return client
