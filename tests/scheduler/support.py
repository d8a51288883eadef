"""Helpers of the scheduler tests: tenants files with schedules, reading arq's queue, simulated workers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from arq.constants import default_queue_name, in_progress_key_prefix, job_key_prefix
from arq.jobs import JobDef

MODULES = ["customers", "invoices", "orders"]


def utc(*parts: int) -> float:
    """Unix seconds of a UTC wall time: ``utc(2026, 3, 8, 2, 30)``."""
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def tenants_yaml(tenants: dict[str, dict[str, Any] | None], imports: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tenants file: one provider, each tenant with the given ``imports`` section (or none)."""
    data: dict[str, Any] = {
        "providers": {"demo": {"token_url": "http://idp.test/token", "api_base_url": "http://api.test/"}},
        "tenants": {},
    }
    if imports is not None:
        data["imports"] = imports
    for name, own in tenants.items():
        entry: dict[str, Any] = {"providers": {"demo": {"client_id": name, "client_secret": {"env": "UNUSED"}}}}
        if own is not None:
            entry["imports"] = own
        data["tenants"][name] = entry
    return data


async def jobs(redis: ArqRedis, function: str | None = None) -> list[JobDef]:
    """Every job in arq's queue (optionally of one function), in queue order."""
    found = await redis.queued_jobs()
    return [j for j in found if function is None or j.function == function]


class SimulatedWorkers:
    """Runs due jobs the way arq finishes them, keeping no result: then only the scheduler's ledger
    stands between a job that already ran and a second run (the hardest case for exactly-once)."""

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis
        self.ran: list[JobDef] = []

    async def run_due(self, now: float, on_job: Callable[[JobDef], Any] | None = None) -> list[JobDef]:
        due = [j for j in await jobs(self.redis) if j.score is not None and j.score <= now * 1000]
        for job in due:
            assert job.job_id is not None
            assert not await self.redis.exists(in_progress_key_prefix + job.job_id)
            if on_job is not None:
                await on_job(job)
            await self.redis.delete(job_key_prefix + job.job_id)
            await self.redis.zrem(default_queue_name, job.job_id)
        self.ran.extend(due)
        return due
