"""Re-running imports: what ``conduit imports rerun`` and the console's re-run buttons both do.

A re-run is a new attempt under a job id of its own (arq keeps a finished
job's result under its id and would refuse it again), queued in the ledger
first, then in arq. Never a second job for an import that is queued or
running: those are skipped, and the reason said.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus

from shared import events
from shared.import_runs import RunKey, active_runs, mark_lost, queue_attempt
from shared.jobs import IMPORT_EXPORT, import_job_id

_PENDING = (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress)

# The latest attempt of each (tenant, module, export date), when that attempt failed.
_FAILED_LATEST = """
SELECT tenant_id, module, export_date FROM (
    SELECT DISTINCT ON (tenant_id, module, export_date) tenant_id, module, export_date, status FROM import_runs
    WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR module = $2)
      AND ($3::date IS NULL OR export_date >= $3) AND ($4::date IS NULL OR export_date <= $4)
    ORDER BY tenant_id, module, export_date, attempt DESC
) latest WHERE status = 'failed' ORDER BY tenant_id, module, export_date
"""


@dataclass(frozen=True)
class FailedFilter:
    tenant: str | None = None
    module: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None


@dataclass
class Outcome:
    lines: list[str] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)
    enqueued: int = 0
    skipped: int = 0


async def failed_latest(conn: asyncpg.Connection, where: FailedFilter) -> list[RunKey]:
    """Every (tenant, module, date) matching ``where`` whose latest attempt failed."""
    rows = await conn.fetch(_FAILED_LATEST, where.tenant, where.module, where.date_from, where.date_to)
    return [RunKey(r["tenant_id"], r["module"], r["export_date"]) for r in rows]


async def rerun(arq: ArqRedis, conn: asyncpg.Connection, keys: list[RunKey]) -> Outcome:
    """Queue a new attempt of each key (skipping those already pending); one line per key."""
    outcome = Outcome()
    for key in keys:
        line, run_id = await _enqueue(arq, conn, key)
        outcome.lines.append(line)
        if run_id is not None:
            outcome.run_ids.append(run_id)
            outcome.enqueued += 1
        else:
            outcome.skipped += 1
    return outcome


async def enqueue(arq: ArqRedis, conn: asyncpg.Connection, key: RunKey) -> str:
    """Queue a new attempt of ``key`` under a job id of its own, unless one is already queued or running."""
    return (await _enqueue(arq, conn, key))[0]


async def _enqueue(arq: ArqRedis, conn: asyncpg.Connection, key: RunKey) -> tuple[str, int | None]:
    day = key.export_date.isoformat()
    what = f"{key.tenant}/{key.module}/{day}"
    why = await busy(arq, conn, key)
    if why:
        return f"skipped {what}: {why}", None
    job_id = f"{import_job_id(key.tenant, key.module, day)}:rerun:{time.time_ns() // 1000}"
    attempt = await queue_attempt(conn, key, job_id)
    job = await arq.enqueue_job(IMPORT_EXPORT, key.tenant, key.module, day, _job_id=job_id)
    if job is None:
        await mark_lost(conn, attempt.id)
        return f"skipped {what}: arq refused job id {job_id}", None
    events.emit(arq, "job", "queued", job_id=job_id, tenant=key.tenant, module=key.module, export_date=day)
    return f"enqueued {what} as job {job_id} (run {attempt.id}, attempt {attempt.number})", attempt.id


async def busy(arq: ArqRedis, conn: asyncpg.Connection, key: RunKey) -> str | None:
    """Why a new attempt must not be queued now (None if it may): arq or the ledger say one is pending."""
    scheduled = import_job_id(key.tenant, key.module, key.export_date.isoformat())
    status = await _job(arq, scheduled).status()
    if status in _PENDING:
        return f"job {scheduled} is already {status.value}"
    for run in await active_runs(conn, key):
        status = await _job(arq, run["job_id"]).status() if run["job_id"] else JobStatus.not_found
        if status in _PENDING:
            return f"run {run['id']} is {run['status']} (job {run['job_id']})"
        if run["status"] == "queued":
            await mark_lost(conn, run["id"])
    return None


def _job(arq: ArqRedis, job_id: str) -> Job:
    return Job(job_id, arq, _deserializer=arq.job_deserializer)


def keys_of(runs: list[dict[str, Any]]) -> list[RunKey]:
    return [RunKey(r["tenant_id"], r["module"], r["export_date"]) for r in runs]
