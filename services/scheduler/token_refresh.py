"""Enqueueing token refreshes: each pair at its due time, with an id every replica agrees on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from arq.connections import ArqRedis

from services.scheduler.metrics import JOBS_ENQUEUED, SCHEDULE_LAG
from shared import redis_keys
from shared.jobs import REFRESH_TOKEN, refresh_job_id
from shared.tenants import TenantsConfig

_EXPIRES_AFTER = 86400.0
# arq starts the jobs in its queue in the order of their scores (their times). A refresh that is
# due now is scored this much earlier, so a backlog of imports (a daily cycle, a busy tenant) does
# not hold it: it takes the next free slot.
_AHEAD_OF_IMPORTS = 86400.0


@dataclass(frozen=True, slots=True)
class PlannedRefresh:
    tenant: str
    provider: str
    job_id: str
    run_at: float | None  # None: now
    due: float | None = None  # None: never refreshed


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
            planned.append(PlannedRefresh(tenant, provider, refresh_job_id(tenant, provider, score), run_at, score))
    return planned


async def enqueue_refreshes(redis: ArqRedis, planned: list[PlannedRefresh], now: float | None = None) -> int:
    """Enqueue the planned refreshes; arq drops ids it already has, so replicas never double up.

    One due now goes ahead of every waiting import; one planned ahead waits for its time.

    Times come from the scheduler's clock (``now``), not arq's, so a tick is driven by one clock.
    """
    now = time.time() if now is None else now
    enqueued = 0
    for job in planned:
        start = job.run_at if job.run_at is not None else now
        score = start if job.run_at is not None else now - _AHEAD_OF_IMPORTS
        if await redis.enqueue_job(
            REFRESH_TOKEN,
            job.tenant,
            job.provider,
            _job_id=job.job_id,
            _defer_until=datetime.fromtimestamp(score, tz=UTC),
            # arq's default: the job is dropped if it has not started a day after it should have.
            _expires=start - now + _EXPIRES_AFTER,
        ):
            enqueued += 1
            if job.due is not None:
                SCHEDULE_LAG.labels(REFRESH_TOKEN).observe(max(now - job.due, 0.0))
    if enqueued:
        JOBS_ENQUEUED.labels(REFRESH_TOKEN).inc(enqueued)
    return enqueued


class RecentRefreshes:
    """Refresh ids this scheduler enqueued (or found already queued) in the last ``hold`` seconds.

    A refresh stays planned until a worker runs it and moves the pair's due time;
    remembering it spares a Redis transaction per pair per tick meanwhile. After
    ``hold`` seconds it is offered to arq again, which re-enqueues it only if the
    job is gone without having moved the schedule (a worker died, say).
    """

    def __init__(self, hold: float = 30.0) -> None:
        self.hold = hold
        self._seen: dict[str, float] = {}

    def fresh(self, planned: list[PlannedRefresh], now: float) -> list[PlannedRefresh]:
        self._seen = {job_id: at for job_id, at in self._seen.items() if now - self.hold < at <= now}
        return [job for job in planned if job.job_id not in self._seen]

    def remember(self, planned: list[PlannedRefresh], now: float) -> None:
        self._seen.update((job.job_id, now) for job in planned)
