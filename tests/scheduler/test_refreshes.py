"""Token refreshes from the scheduler's side: each due refresh enqueued once, and cheaply while it waits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import default_queue_name, job_key_prefix

from services.scheduler.main import Scheduler
from shared.jobs import REFRESH_TOKEN
from shared.tenants import TenantsConfig
from tests.scheduler.support import jobs, utc


async def test_a_queued_refresh_is_not_offered_to_redis_every_tick(
    write_tenants: Callable[..., TenantsConfig],
    make_scheduler: Callable[..., Scheduler],
    arq_redis: ArqRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scheduler = make_scheduler(write_tenants({"acme": None, "globex": None}), modules=[])
    start = utc(2026, 5, 1, 12)
    assert await scheduler.tick(start) == 2
    calls: list[str] = []
    enqueue = arq_redis.enqueue_job

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["_job_id"])
        return await enqueue(*args, **kwargs)

    monkeypatch.setattr(arq_redis, "enqueue_job", counting)
    for quarter in range(1, 116):  # ticks for 29 s: the jobs wait in the queue, no worker runs
        assert await scheduler.tick(start + quarter / 4) == 0
    assert calls == []
    # Offered again after 30 s; arq still has them, so nothing is added.
    assert await scheduler.tick(start + 31) == 0
    assert sorted(calls) == ["refresh:acme:demo:init", "refresh:globex:demo:init"]
    # A worker died with one: the job is gone and the schedule did not move, so it comes back.
    [gone] = [j for j in await jobs(arq_redis, REFRESH_TOKEN) if j.args[0] == "acme"]
    await arq_redis.delete(job_key_prefix + (gone.job_id or ""))
    await arq_redis.zrem(default_queue_name, gone.job_id or "")
    assert await scheduler.tick(start + 45) == 0  # still within 30 s of being offered
    assert await scheduler.tick(start + 62) == 1
    assert sorted(j.args[0] for j in await jobs(arq_redis, REFRESH_TOKEN)) == ["acme", "globex"]
