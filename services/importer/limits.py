"""Limits that hold across every worker, kept in Redis: imports per tenant, and export requests per provider.

The tenant limit is a counting semaphore of leases (a sorted set scored by
lease expiry): a worker that dies stops renewing its lease and the slot frees
itself a lease later, with no one having to clean up. The provider limit is a
GCRA rate limiter (one timestamp per provider). Both take the time from Redis,
so workers' clocks never have to agree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.importer.errors import Busy
from shared.logging import get_logger

log = get_logger(__name__)

_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)"
_ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = now + tonumber(ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
  return 1
end
return 0
"""
)
_RENEW = (
    _NOW_MS
    + """
local lease = now + tonumber(ARGV[1])
local kept = redis.call('ZADD', KEYS[1], 'XX', 'CH', lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return redis.call('ZSCORE', KEYS[1], ARGV[2]) and 1 or 0
"""
)
_GCRA = (
    _NOW_MS
    + """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - now - burst * interval
if wait > 0 then return wait end
-- PX takes whole milliseconds; a rate that does not divide 1000 gives a fractional interval.
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now + 1000))
return 0
"""
)


def slots_key(tenant: str) -> str:
    return f"conduit:import:slots:{tenant}"


def rate_key(provider: str) -> str:
    return f"conduit:import:rate:{provider}"


class TenantSlots:
    """At most ``limit`` imports per tenant at once, across every worker."""

    def __init__(self, redis: Redis, limit: int, lease: float) -> None:
        self._redis = redis
        self._limit = limit
        self._lease_ms = int(lease * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)

    async def try_acquire(self, tenant: str, holder: str) -> bool:
        return bool(await self._acquire(keys=[slots_key(tenant)], args=[self._lease_ms, self._limit, holder]))

    async def release(self, tenant: str, holder: str) -> None:
        await self._redis.zrem(slots_key(tenant), holder)

    @asynccontextmanager
    async def hold(self, tenant: str, holder: str, busy_defer: float) -> AsyncIterator[None]:
        """Hold a slot for the block, renewing the lease; raise :class:`Busy` if the tenant has none free."""
        if not await self.try_acquire(tenant, holder):
            raise Busy(f"tenant {tenant!r} already runs {self._limit} imports", busy_defer)
        renewer = asyncio.create_task(self._keep(tenant, holder))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            # Shielded: a cancelled job must still give its slot back (or it waits a lease).
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(self.release(tenant, holder))

    async def _keep(self, tenant: str, holder: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                if not await self._renew(keys=[slots_key(tenant)], args=[self._lease_ms, holder]):
                    log.warning("import slot lease was lost; continuing", tenant=tenant, holder=holder)
            except (RedisError, OSError) as exc:
                log.warning("cannot renew the import slot lease", tenant=tenant, error=type(exc).__name__)


class ProviderRate:
    """At most ``rate`` export requests per second to one provider (``burst`` at once), across every worker."""

    def __init__(self, redis: Redis, rate: float, burst: int, overrides: dict[str, float]) -> None:
        self._redis = redis
        self._rate = rate
        self._burst = burst
        self._overrides = overrides
        self._gcra = redis.register_script(_GCRA)

    async def wait(self, provider: str, max_wait: float) -> float:
        """Wait for this provider's turn and return how long that took; raise :class:`Busy` past ``max_wait``."""
        interval_ms = 1000.0 / self._overrides.get(provider, self._rate)
        waited = 0.0
        while True:
            wait_ms = float(await self._gcra(keys=[rate_key(provider)], args=[interval_ms, self._burst]))
            if wait_ms <= 0:
                return waited
            if waited + wait_ms / 1000 > max_wait:
                raise Busy(f"provider {provider!r} is at its request rate", wait_ms / 1000)
            # A computed wait for a rate, not a stand-in for an event.
            await asyncio.sleep(wait_ms / 1000)
            waited += wait_ms / 1000
