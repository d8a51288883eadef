"""Paused import schedules: a Redis set the console writes and the scheduler reads every tick.

A member is a tenant (``acme``: all its modules) or a tenant's module
(``acme/invoices``). While paused, a fire's imports are not enqueued (the
scheduler's enqueue script checks the set, atomically with each job); they stay
pending, so resuming within the scheduler's catch-up window enqueues them then.
"""

from __future__ import annotations

from redis.asyncio import Redis

from shared.redis_keys import SCHEDULES_PAUSED


def member(tenant: str, module: str | None = None) -> str:
    return tenant if module is None else f"{tenant}/{module}"


async def paused_schedules(redis: Redis) -> frozenset[str]:
    members = await redis.smembers(SCHEDULES_PAUSED)  # type: ignore[misc]
    return frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)


def is_paused(paused: frozenset[str], tenant: str, module: str) -> bool:
    return bool(paused) and (tenant in paused or f"{tenant}/{module}" in paused)


async def pause(redis: Redis, tenant: str, module: str | None = None) -> bool:
    """True if it was not paused before."""
    return bool(await redis.sadd(SCHEDULES_PAUSED, member(tenant, module)))  # type: ignore[misc]


async def resume(redis: Redis, tenant: str, module: str | None = None) -> bool:
    """True if it was paused before."""
    return bool(await redis.srem(SCHEDULES_PAUSED, member(tenant, module)))  # type: ignore[misc]
