"""Creating Redis clients the same way everywhere, and naming a Redis URL without its password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

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


def safe_url(url: str) -> str:
    """The URL for logs and error messages: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
