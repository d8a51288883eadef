"""Optional cache of upstream GET responses, per tenant and provider, in Redis.

Off by default. A route is cached only where a ``proxy_cache_routes`` prefix
allows it; the key holds the tenant and provider, so one tenant's answer can
never be served to another, and the provider's api_base_url, so a provider moved
to another base is not answered from the old one's entries. The upstream's ``Cache-Control`` is honoured:
``no-store``/``no-cache`` are never stored and ``max-age``/``s-maxage`` shorten
the route's TTL, an Expires in the past or unreadable means stale, and every line
of ``Vary`` and ``Cache-Control`` counts. Requests with a body, ``Range`` or
``If-Range`` neither use nor fill it. ``private`` is stored, because every entry
is private to its tenant already.

The key alone does not keep tenants apart: anyone who can write Redis could copy
one tenant's entry under another's key, or write an answer of their own. So each
entry is sealed (``shared.crypto.BoundSealer``, under the token key) with its
Redis key as associated data, and holds its own expiry: an entry that does not
open for the key it is read from, has expired, or predates sealing is a miss,
never served, and the upstream's fresh answer replaces it.
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

from services.auth_proxy.metrics import CACHE
from services.auth_proxy.settings import CacheRoute
from shared import redis_keys
from shared.crypto import BoundSealer, RecordUnreadable
from shared.logging import get_logger

log = get_logger(__name__)

_VARY_OK = frozenset({"accept", "accept-encoding"})
# In every key's digest: bumped when what an entry holds changes. 2: bodies decoded before masking (codings.py);
# entries stored before could hold a compressed body with the token in it, and are never read again.
_FORMAT = 2


@dataclass(frozen=True, slots=True)
class EntryKey:
    """Where one entry lives; ``redis_key`` names tenant, provider and the request's digest, and seals it."""

    tenant: str
    provider: str
    redis_key: str


@dataclass(frozen=True, slots=True)
class CachedResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    age: int


class ResponseCache:
    """Looks up and stores GET responses; every Redis failure degrades to a miss, never to an error."""

    def __init__(self, redis: Redis, routes: list[CacheRoute], max_entry_bytes: int, sealer: BoundSealer) -> None:
        self._redis = redis
        self._routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self.max_entry_bytes = max_entry_bytes
        self._sealer = sealer

    def route_ttl(self, method: str, target: str) -> float | None:
        """The TTL of the longest matching route for a cacheable request, else None."""
        if method != "GET":
            return None
        for route in self._routes:
            if target.startswith(route.prefix):
                return route.ttl
        return None

    @staticmethod
    def key(tenant: str, provider: str, base: str, target: str, headers: CIMultiDictProxy[str]) -> EntryKey:
        """Where the answer to ``target`` under the provider's ``base`` (its api_base_url) lives: a provider moved
        to another base is not answered from what the old one said."""
        # A JSON array: no value can end one field and start the next, whatever bytes it holds.
        accepts = [_combined(headers, "Accept"), _combined(headers, "Accept-Encoding")]
        material = orjson.dumps([_FORMAT, base, target, *accepts])
        digest = hashlib.sha256(material).hexdigest()
        return EntryKey(tenant, provider, redis_keys.response_cache(tenant, provider, digest))

    async def get(self, key: EntryKey) -> CachedResponse | None:
        try:
            sealed = await self._redis.hget(key.redis_key, "sealed")  # type: ignore[misc]
        except RedisError as exc:
            log.warning("response cache unavailable", error=type(exc).__name__)
            return None
        if sealed is None:
            return None  # nothing, or an entry from before sealing (fields meta and body): put replaces it
        try:
            return _opened(self._sealer.open(sealed, key.redis_key.encode()), time.time())
        except (RecordUnreadable, ValueError, KeyError, TypeError):
            # No body, digest or reason in the line: what failed is the entry, what it holds is not ours to show.
            log.warning("response cache entry refused", tenant=key.tenant, provider=key.provider)
            CACHE.labels(key.tenant, key.provider, "refused").inc()
            await self._drop(key)
            return None

    async def _drop(self, key: EntryKey) -> None:
        # Gone, it is refused (and logged) once, even where the fresh answer may not be stored in its place.
        try:
            await self._redis.delete(key.redis_key)
        except RedisError as exc:
            log.warning("response cache unavailable", error=type(exc).__name__)

    async def put(self, key: EntryKey, status: int, headers: list[tuple[str, str]], body: bytes, ttl: float) -> None:
        now = time.time()
        meta = orjson.dumps({"status": status, "headers": headers, "stored_at": now, "expires_at": now + ttl})
        sealed = self._sealer.seal(len(meta).to_bytes(4, "big") + meta + body, key.redis_key.encode())
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key.redis_key)  # an unsealed entry's fields go with it
                pipe.hset(key.redis_key, mapping={"sealed": sealed})
                pipe.pexpire(key.redis_key, int(ttl * 1000))
                await pipe.execute()
        except RedisError as exc:
            log.warning("response cache store failed", error=type(exc).__name__)


def _opened(plain: bytes, now: float) -> CachedResponse | None:
    """The entry sealed as ``put`` writes it; None once past the expiry sealed in it (Redis's TTL can be lifted)."""
    size = int.from_bytes(plain[:4], "big")
    data = orjson.loads(plain[4 : 4 + size])
    if now >= data["expires_at"]:
        return None  # a clock apart from Redis's, or a TTL lifted: a miss either way
    age = max(0, int(now - data["stored_at"]))
    return CachedResponse(data["status"], [(k, v) for k, v in data["headers"]], plain[4 + size :], age)


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
