"""OutageTolerantWorker's own bookkeeping, in process against the real Redis (the process-level
behaviour is in tests/e2e/test_redis_outage.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis, RedisSettings
from arq.worker import func
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from services.importer.outage_worker import OutageTolerantWorker
from shared.job_json import create_pool


async def ran(ctx: dict[str, Any]) -> str:
    return "ran"


@pytest.fixture
async def pool(redis: Redis, redis_url: str) -> AsyncIterator[ArqRedis]:
    """A pool for the worker alone; ``redis`` empties the database around the test."""
    client = await create_pool(RedisSettings.from_dsn(redis_url))
    yield client
    await client.aclose()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[ArqRedis]:
    """The test's own pool, to enqueue and to read results."""
    other = await create_pool(RedisSettings.from_dsn(redis_url))
    yield other
    await other.aclose()


@pytest.mark.parametrize("failing", [1, 2], ids=["start_jobs", "run_job"])
async def test_redis_failing_as_a_job_starts_leaves_the_job_to_run_at_once(
    pool: ArqRedis, client: ArqRedis, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    """The first transaction is start_jobs' (taking the in-progress key), the second run_job's (reading the job).

    One job slot: had arq's count of running jobs kept a failed start, no job could start again; had a
    failed read kept the in-progress key, the job would wait for its expiry (the job timeout + 10 s)."""
    worker = OutageTolerantWorker([func(ran, name="ran")], redis_pool=pool, max_jobs=1, poll_delay=0.01,
                                  handle_signals=False)  # fmt: skip
    transactions = 0
    pipeline = pool.pipeline

    def one_fails(*args: Any, **kwargs: Any) -> Any:
        nonlocal transactions
        # The startup's INFO is a plain pipeline; only transactions count.
        transactions += bool(kwargs.get("transaction"))
        if kwargs.get("transaction") and transactions == failing:
            raise RedisConnectionError("Connection closed by server.")
        return pipeline(*args, **kwargs)

    monkeypatch.setattr(pool, "pipeline", one_fails)
    job = await client.enqueue_job("ran")
    assert job is not None
    running = asyncio.create_task(worker.async_run())
    try:
        assert await job.result(timeout=5, poll_delay=0.01) == "ran"
        assert transactions > failing and not running.done()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
