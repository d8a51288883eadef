"""Optional cache of upstream GET responses, per tenant and provider, in Redis.

Off by default. A route is cached only where a ``proxy_cache_routes`` prefix
allows it; the key holds the tenant and provider, so one tenant's answer can
never be served to another. The upstream's ``Cache-Control`` is honoured:
``no-store``/``no-cache`` are never stored and ``max-age``/``s-maxage`` shorten
the route's TTL, an Expires in the past or unreadable means stale, and every line
of ``Vary`` and ``Cache-Control`` counts. Requests with a body, ``Range`` or
``If-Range`` neither use nor fill it. ``private`` is stored, because every entry
is private to its tenant already.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.auth_proxy.settings import CacheRoute
from shared import redis_keys
from shared.logging import get_logger

log = get_logger(__name__)

_VARY_OK = frozenset({"accept", "accept-encoding"})
# In every key's digest: bumped when what an entry holds changes. 2: bodies decoded before masking (codings.py);
# entries stored before could hold a compressed body with the token in it, and are never read again.
_FORMAT = 2


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
        # A JSON array: no value can end one field and start the next, whatever bytes it holds.
        material = orjson.dumps([_FORMAT, target, _combined(headers, "Accept"), _combined(headers, "Accept-Encoding")])
        return redis_keys.response_cache(tenant, provider, hashlib.sha256(material).hexdigest())

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
    """How long this upstream response may be cached, or None if it must not be (RFC 9111 §3, §4.2.1)."""
    if status != 200 or "Set-Cookie" in headers:
        return None
    if not _listed(headers, "Vary") <= _VARY_OK:
        return None
    control = _directives(headers, "Cache-Control")
    if "no-store" in control or "no-cache" in control:
        return None
    for name in ("s-maxage", "max-age"):
        if name in control:
            # An age that is not a number makes the response stale (RFC 9111 §1.2.2), not the route's TTL.
            age = (control[name] or "").strip('"')
            if not age.isdigit() or int(age) == 0:
                return None
            return min(route_ttl, float(age))
    if "Expires" in headers:
        return _until_expires(headers, route_ttl)
    return route_ttl


def caller_bypasses(headers: CIMultiDictProxy[str], has_body: bool) -> bool:
    """True when the cache must neither answer nor keep this request's answer.

    The cache keys on the target, Accept and Accept-Encoding only: a body, a Range or an If-Range
    would make another request of the same key mean something else.
    """
    if has_body or "Range" in headers or "If-Range" in headers:
        return True
    control = _directives(headers, "Cache-Control")
    if "Cache-Control" not in headers and "no-cache" in _listed(headers, "Pragma"):
        return True  # RFC 9111 §5.4: Pragma counts only where Cache-Control is absent
    return "no-cache" in control or "no-store" in control


def _combined(headers: CIMultiDict[str] | CIMultiDictProxy[str], name: str) -> str:
    # Every line of a field, as one list (RFC 9110 §5.3); the first line alone would let two requests
    # the upstream reads differently share an entry, or a second Vary or Cache-Control line go unseen.
    return ", ".join(headers.getall(name, ()))


def _listed(headers: CIMultiDict[str] | CIMultiDictProxy[str], name: str) -> set[str]:
    return {v.strip().lower() for v in _combined(headers, name).split(",") if v.strip()}


def _directives(headers: CIMultiDict[str] | CIMultiDictProxy[str], name: str) -> dict[str, str | None]:
    # Hand-read rather than a library's: only names and plain values matter here, and a quoted value
    # with a comma in it (no-cache="a, b") still yields its directive's name first, so errs towards not storing.
    out: dict[str, str | None] = {}
    for item in _listed(headers, name):
        key, sep, value = item.partition("=")
        out.setdefault(key.strip(), value.strip() if sep else None)
    return out


def _until_expires(headers: CIMultiDict[str] | CIMultiDictProxy[str], route_ttl: float) -> float | None:
    """Expires minus Date; an Expires that is no date (say ``0``) is already in the past (RFC 9111 §5.3)."""
    expires = _http_date(headers["Expires"])
    if expires is None:
        return None
    now = _http_date(headers.get("Date", "")) or time.time()
    left = min(route_ttl, expires - now)
    return left if left > 0 else None


def _http_date(value: str) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # '-0000' (and obsolete forms) parse without a zone; HTTP dates are always GMT.
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
