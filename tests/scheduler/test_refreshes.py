"""Token refreshes from the scheduler's side: each due refresh enqueued once, and cheaply while it waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from arq import Worker, func
from arq.connections import ArqRedis
from arq.constants import default_queue_name, job_key_prefix

from services.scheduler.main import Scheduler
from shared.job_json import CODEC
from shared.jobs import IMPORT_EXPORT, REFRESH_TOKEN
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


async def test_a_due_refresh_runs_ahead_of_an_import_backlog(
    write_tenants: Callable[..., TenantsConfig], make_scheduler: Callable[..., Scheduler], arq_redis: ArqRedis
) -> None:
    """arq starts jobs in the order of their times: a refresh due now must not wait behind imports queued before."""
    now = time.time()
    for n in range(20):
        await arq_redis.enqueue_job(
            IMPORT_EXPORT,
            "acme",
            f"m{n}",
            "2026-05-01",
            _job_id=f"import-{n}",
            _defer_until=datetime.fromtimestamp(now - 60 + n, tz=UTC),
        )
    scheduler = make_scheduler(write_tenants({"acme": None}), modules=[])
    assert await scheduler.tick(now) == 1  # acme's first refresh, due at once
    started: list[str] = []

    async def record(ctx: dict[str, Any], *args: str) -> None:
        started.append(ctx["job_id"])

    worker = Worker(
        [func(record, name=IMPORT_EXPORT), func(record, name=REFRESH_TOKEN)],  # type: ignore[arg-type]
        redis_pool=arq_redis,
        burst=True,
        poll_delay=0,
        max_jobs=1,
        handle_signals=False,
        **CODEC,
    )
    await worker.main()
    assert len(started) == 21
    assert started[0] == "refresh:acme:demo:init"
