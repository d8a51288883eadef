"""A stand-in ``import_export`` for `python -m bench scheduler` while the importer's job is not there.

It does no import: it only records, in Redis, how many jobs of each tenant run at
once, so the bench measures what the queue itself costs (arq's polling,
bookkeeping and results) and the per-tenant concurrency the workers produce.
Run as ``arq bench._scheduler_worker.WorkerSettings --burst``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from arq.connections import RedisSettings
from arq.worker import func

from shared.job_json import dumps, loads
from shared.jobs import IMPORT_EXPORT

RUNNING = "bench:scheduler:running:"
PEAK = "bench:scheduler:peak"
# Seconds of pretend work per job; 0 measures the queue alone.
WORK = float(os.environ.get("BENCH_JOB_SECONDS", "0"))

_ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') then redis.call('HSET', KEYS[2], ARGV[1], n) end
return n
"""


async def import_export(ctx: dict[str, Any], tenant: str, module: str, export_date: str) -> None:
    redis = ctx["redis"]
    await redis.eval(_ENTER, 2, RUNNING + tenant, PEAK, tenant)
    try:
        if WORK:
            await asyncio.sleep(WORK)
    finally:
        await redis.decr(RUNNING + tenant)


class WorkerSettings:
    functions = [func(import_export, name=IMPORT_EXPORT)]
    redis_settings = RedisSettings.from_dsn(os.environ.get("CONDUIT_REDIS_URL", "redis://127.0.0.1:6379/12"))
    poll_delay = 0.05
    max_jobs = int(os.environ.get("CONDUIT_IMPORTER_MAX_JOBS", "10"))
    job_serializer = dumps
    job_deserializer = loads
