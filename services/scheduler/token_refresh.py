"""Enqueueing token refreshes: each pair at its due time, with an id every replica agrees on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from arq.connections import ArqRedis
from prometheus_client import Counter

from shared import redis_keys
from shared.jobs import REFRESH_TOKEN, refresh_job_id
from shared.tenants import TenantsConfig

JOBS_ENQUEUED = Counter(
    "conduit_scheduler_jobs_enqueued_total", "Jobs this scheduler enqueued (duplicates excluded), by kind.", ["kind"]
)


@dataclass(frozen=True, slots=True)
class PlannedRefresh:
    tenant: str
    provider: str
    job_id: str
    run_at: float | None  # None: now


async def plan_refreshes(redis: ArqRedis, tenants: TenantsConfig, now: float, lookahead: float) -> list[PlannedRefresh]:
    """Refreshes due before ``now + lookahead``, and an immediate one for pairs never refreshed."""
    pairs = list(tenants.pairs())
    if not pairs:
        return []
    members = [redis_keys.pair_member(t, p) for t, p in pairs]
    scores = await redis.zmscore(redis_keys.TOKENS_DUE, members)
    planned = []
    for (tenant, provider), score in zip(pairs, scores, strict=True):
        if score is None:
            planned.append(PlannedRefresh(tenant, provider, refresh_job_id(tenant, provider, None), None))
        elif score <= now + lookahead:
            run_at = score if score > now else None
            planned.append(PlannedRefresh(tenant, provider, refresh_job_id(tenant, provider, score), run_at))
    return planned


async def enqueue_refreshes(redis: ArqRedis, planned: list[PlannedRefresh]) -> int:
    """Enqueue the planned refreshes; arq drops ids it already has, so replicas never double up."""
    enqueued = 0
    for job in planned:
        defer = datetime.fromtimestamp(job.run_at, tz=UTC) if job.run_at is not None else None
        if await redis.enqueue_job(REFRESH_TOKEN, job.tenant, job.provider, _job_id=job.job_id, _defer_until=defer):
            enqueued += 1
    if enqueued:
        JOBS_ENQUEUED.labels("refresh_token").inc(enqueued)
    return enqueued
