"""Optional cache of upstream GET responses, per tenant and provider, in Redis.

Off by default. A route is cached only where a ``proxy_cache_routes`` prefix
allows it; the key holds the tenant and provider, so one tenant's answer can
never be served to another. The upstream's ``Cache-Control`` is honoured:
``no-store``/``no-cache`` are never stored and ``max-age``/``s-maxage`` shorten
the route's TTL. ``private`` is stored, because every entry is private to its
tenant already.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.auth_proxy.settings import CacheRoute
from shared import redis_keys
from shared.logging import get_logger

log = get_logger(__name__)

_MAX_AGE = re.compile(r"(?:^|,)\s*(s-maxage|max-age)\s*=\s*\"?(\d+)", re.IGNORECASE)
_VARY_OK = frozenset({"accept", "accept-encoding"})


@dataclass(frozen=True, slots=True)
class CachedResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    age: int


class ResponseCache:
    """Looks up and stores GET responses; every Redis failure degrades to a miss, never to an error."""

    def __init__(self, redis: Redis, routes: list[CacheRoute], max_entry_bytes: int) -> None:
        self._redis = redis
        self._routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self.max_entry_bytes = max_entry_bytes

    def route_ttl(self, method: str, target: str) -> float | None:
        """The TTL of the longest matching route for a cacheable request, else None."""
        if method != "GET":
            return None
        for route in self._routes:
            if target.startswith(route.prefix):
                return route.ttl
        return None

    @staticmethod
    def key(tenant: str, provider: str, target: str, headers: CIMultiDictProxy[str]) -> str:
        material = "\n".join((target, headers.get("Accept", ""), headers.get("Accept-Encoding", "")))
        return redis_keys.response_cache(tenant, provider, hashlib.sha256(material.encode()).hexdigest())

    async def get(self, key: str) -> CachedResponse | None:
        try:
            meta, body = await self._redis.hmget(key, ["meta", "body"])  # type: ignore[misc]
        except RedisError as exc:
            log.warning("response cache unavailable", error=type(exc).__name__)
            return None
        if meta is None or body is None:
            return None
        data = orjson.loads(meta)
        age = max(0, int(time.time() - data["stored_at"]))
        return CachedResponse(data["status"], [tuple(h) for h in data["headers"]], body, age)

    async def put(self, key: str, status: int, headers: list[tuple[str, str]], body: bytes, ttl: float) -> None:
        meta = orjson.dumps({"status": status, "headers": headers, "stored_at": time.time()})
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"meta": meta, "body": body})
                pipe.pexpire(key, int(ttl * 1000))
                await pipe.execute()
        except RedisError as exc:
            log.warning("response cache store failed", error=type(exc).__name__)


def storable_ttl(status: int, headers: CIMultiDict[str] | CIMultiDictProxy[str], route_ttl: float) -> float | None:
    """How long this upstream response may be cached, or None if it must not be."""
    if status != 200 or "Set-Cookie" in headers:
        return None
    vary = {v.strip().lower() for v in headers.get("Vary", "").split(",") if v.strip()}
    if not vary <= _VARY_OK:
        return None
    control = headers.get("Cache-Control", "").lower()
    if "no-store" in control or "no-cache" in control:
        return None
    ages = dict((name.lower(), int(value)) for name, value in _MAX_AGE.findall(control))
    max_age = ages.get("s-maxage", ages.get("max-age"))
    if max_age is not None:
        return min(route_ttl, float(max_age)) or None
    return route_ttl


def caller_bypasses(headers: CIMultiDictProxy[str]) -> bool:
    control = headers.get("Cache-Control", "").lower()
    return "no-cache" in control or "no-store" in control
