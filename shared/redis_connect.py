"""Where Redis is, turned into clients: one node (``redis://``, or ``rediss://`` verified against a CA file),
or the master that Redis Sentinel names.

Every process builds its clients here, whether redis-py's (the proxy, the scheduler, the CLI) or arq's
(the workers, which arq connects itself from a ``RedisSettings``). In Sentinel mode ``CONDUIT_REDIS_URL``
still gives the database, the user, the password and TLS (``rediss://``) of the master; its host and port
are not used, the Sentinels in ``CONDUIT_REDIS_SENTINELS`` say where the master is now.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import urlsplit

from arq.connections import RedisSettings
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.connection import parse_url

from shared.redis_location import RedisLocation

R = TypeVar("R", bound=Redis)


def connect(url: str, location: RedisLocation, redis_class: type[R] = Redis, **options: Any) -> R:  # type: ignore[assignment]
    """A client of `redis_class` (e.g. arq's ArqRedis) for the node at `url`, or the Sentinel-named master.

    `options` are the client's (timeouts, health checks); in Sentinel mode the socket timeouts also bound
    each question to a Sentinel.
    """
    if not location.sentinels:
        tls: dict[str, Any] = {"ssl_ca_certs": str(location.ca_file)} if location.ca_file else {}
        return redis_class.from_url(url, **tls, **options)  # type: ignore[no-any-return]
    master = _master_params(url)
    sentinel_options = {key: value for key, value in options.items() if key.startswith("socket_")}
    sentinel = Sentinel(list(location.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client: R = sentinel.master_for(
        location.sentinel_master,
        redis_class=redis_class,
        connection_pool_class=_SentinelPool,
        **master,
        **options,
    )
    return client


def arq_settings(url: str, location: RedisLocation) -> RedisSettings:
    """What arq connects the workers (and `conduit imports`) with: the same place as `connect`."""
    settings = RedisSettings.from_dsn(url)
    if location.ca_file is not None:
        settings.ssl_ca_certs = str(location.ca_file)
    if location.sentinels:
        settings.host = list(location.sentinels)
        settings.sentinel = True
        settings.sentinel_master = location.sentinel_master
    return settings


def _master_params(url: str) -> dict[str, Any]:
    """db, user, password and TLS of the master from the URL (redis-py's own parser); host and port are not used."""
    params: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    ssl = urlsplit(url).scheme == "rediss"
    for key in ("host", "port", "connection_class", "path"):
        params.pop(key, None)
    return params | {"ssl": ssl}


class _SentinelPool(SentinelConnectionPool):
    """Closing the client also closes its connections to the Sentinels, which redis-py leaves open."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.aclose()
