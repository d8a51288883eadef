"""Redis unavailable: the scheduler retries, says so, and enqueues nothing twice when Redis returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from arq.connections import ArqRedis
from redis.exceptions import RedisError
from structlog.testing import capture_logs

from services.scheduler.main import Scheduler, connect
from services.scheduler.settings import SchedulerSettings
from shared.tenants import TenantsConfig
from tests.scheduler.fault_proxy import FaultProxy, fault_proxy
from tests.scheduler.support import MODULES, jobs, utc

MakeScheduler = Callable[..., Scheduler]


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(redis_url) as p:
        yield p


@pytest.fixture
async def proxied(proxy: FaultProxy) -> AsyncIterator[ArqRedis]:
    """The scheduler's own client, through the proxy, with short timeouts."""
    client = connect(SchedulerSettings(redis_url=proxy.url, redis_timeout=0.5))
    yield client
    await client.aclose()


async def test_down_at_0200_then_back_enqueues_once(
    write_tenants: Callable[..., TenantsConfig],
    make_scheduler: MakeScheduler,
    proxy: FaultProxy,
    proxied: ArqRedis,
    arq_redis: ArqRedis,
) -> None:
    scheduler = make_scheduler(write_tenants({"acme": None, "globex": None}), redis=proxied)
    proxy.set("down")
    for minute in range(3):
        with pytest.raises((RedisError, OSError)):
            await scheduler.tick(utc(2026, 5, 1, 2, minute))
    assert await jobs(arq_redis) == []
    proxy.set("up")
    # Both tenants' imports, and their tokens' first refresh.
    assert await scheduler.tick(utc(2026, 5, 1, 2, 3)) == 2 * len(MODULES) + 2
    assert await scheduler.tick(utc(2026, 5, 1, 2, 4)) == 0
    assert len(await jobs(arq_redis)) == 2 * len(MODULES) + 2


async def test_a_reply_lost_after_redis_enqueued_is_not_enqueued_again(
    write_tenants: Callable[..., TenantsConfig],
    make_scheduler: MakeScheduler,
    proxy: FaultProxy,
    proxied: ArqRedis,
    arq_redis: ArqRedis,
) -> None:
    tenants = write_tenants({f"t{i}": None for i in range(100)})  # 300 jobs a day: two script calls
    scheduler = make_scheduler(tenants, redis=proxied)
    assert await scheduler.imports.tick(utc(2026, 4, 30, 2, 0, 1)) == 300  # a good day first
    proxy.set("swallow_replies")
    with pytest.raises((RedisError, OSError)):
        await scheduler.imports.tick(utc(2026, 5, 1, 2, 0, 1))
    # Redis did the work of the first batch; the scheduler never heard.
    partly = len(await jobs(arq_redis)) - 300
    assert 0 < partly < 300
    proxy.set("up")
    assert await scheduler.imports.tick(utc(2026, 5, 1, 2, 0, 2)) == 300 - partly
    queued = await jobs(arq_redis)
    assert len(queued) == len({j.job_id for j in queued}) == 600
    # A second replica that never saw any of this agrees.
    other = make_scheduler(tenants)
    assert await other.imports.tick(utc(2026, 5, 1, 2, 0, 3)) == 0


async def test_the_loop_retries_with_growing_pauses_says_so_and_recovers(
    write_tenants: Callable[..., TenantsConfig], proxy: FaultProxy, proxied: ArqRedis, arq_redis: ArqRedis
) -> None:
    tenants = write_tenants({"acme": None})
    settings = SchedulerSettings(
        redis_url=proxy.url, tenants_file=tenants.path, scheduler_tick=0.01, scheduler_retry_max=0.05
    )
    scheduler = Scheduler(settings, tenants, proxied, MODULES)
    stop = asyncio.Event()
    proxy.set("down")
    with capture_logs() as logs:
        loop = asyncio.create_task(scheduler.run(stop))
        await _until(lambda: sum(e["event"].startswith("redis unavailable") for e in logs) >= 5)
        assert not scheduler.healthy
        proxy.set("up")
        await _until(lambda: scheduler.healthy)
        stop.set()
        await loop
    events = [e for e in logs if e["event"].startswith("redis")]
    assert events[0]["log_level"] == "warning" and "ConnectionError" in events[0]["error"]
    assert events[-1]["event"] == "redis reachable; scheduling"
    retries = [e["retry_in"] for e in events if e["event"].startswith("redis unavailable")]
    assert retries[:3] == [0.01, 0.02, 0.04] and max(retries) == 0.05
    assert len({j.job_id for j in await jobs(arq_redis)}) == len(await jobs(arq_redis))


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Yield to the loop until ``condition`` holds; the deadline only bounds a failing test."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)
