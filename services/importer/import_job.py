"""The import job: ``import_export(tenant, module, export_date)``, enqueued by the scheduler or ``conduit imports``.

Around the pipeline it decides what a failure means:

- a bad file (not a zip, missing columns, too many rejects...) fails the run
  at once: retrying the same bytes cannot help, and a crash loop would hide it;
- a transient failure (proxy 401/429/5xx or timeout, database unavailable) is
  tried again through arq (``Retry`` with exponential backoff and full jitter,
  at least the provider's Retry-After) until ``IMPORTER_MAX_ATTEMPTS``
  attempts of this job have run; then the run stays failed, re-runnable;
- a tenant already running its limit of imports, or this very import running
  on another worker, is not an attempt: the job steps back (``Retry``) and
  comes again shortly.

Every attempt is a ledger row; an attempt whose worker died is closed as
``abandoned`` by the next one, which can only start once the dead worker's
database session (and with it the run's advisory lock) is gone. A job whose
import already committed (its outcome never reached Redis, and arq handed it
out again) returns that outcome without importing again: the ledger, not arq,
says what is done.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from arq.worker import Retry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.importer import ledger
from services.importer.errors import BadExport, Busy, ImportFailed, Transient
from services.importer.limits import ProviderRate, TenantSlots
from services.importer.pipeline import Run, import_export_file
from services.importer.progress import Progress
from services.importer.settings import ImporterSettings
from services.importer.stats import RunRecord
from services.importer.validate import Rejects
from shared.db import UNAVAILABLE
from shared.logging import get_logger
from shared.modules import Catalogue
from shared.tenants import TenantsConfig

log = get_logger(__name__)
# PostgreSQL errors that another try may not meet: deadlocks, serialization failures, full disks, cancels.
_DATABASE_TRANSIENT = (
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.LockNotAvailableError,
)
# Longest a job waits in-process for its provider's rate before stepping back into the queue.
_RATE_WAIT = 10.0


@dataclass
class Importer:
    """What every import in a worker process shares; built once in the worker's startup."""

    settings: ImporterSettings
    pool: asyncpg.Pool
    session: aiohttp.ClientSession
    redis: Redis
    modules: Catalogue
    tenants: TenantsConfig
    slots: TenantSlots
    rate: ProviderRate
    worker_id: str = f"{socket.gethostname()}:{os.getpid()}"


def backoff(settings: ImporterSettings, attempt: int, retry_after: float | None) -> float:
    """Full jitter over an exponential ceiling (AWS's "exponential backoff and jitter"), at least Retry-After."""
    ceiling = min(settings.importer_retry_max, settings.importer_retry_base * 2 ** (attempt - 1))
    return max(random.uniform(0, ceiling), retry_after or 0.0)


async def import_export(ctx: dict[str, Any], tenant: str, module: str, export_date: str) -> str:
    """Import ``module``'s export of ``export_date`` (YYYY-MM-DD) for ``tenant``; returns the run's outcome."""
    importer: Importer = ctx["importer"]
    job_id = str(ctx.get("job_id") or f"adhoc:{tenant}:{module}:{export_date}")
    problem = _check_args(importer, tenant, module, export_date)
    if problem:
        log.error("import job refused", tenant=tenant, module=module, export_date=export_date, problem=problem)
        return f"refused: {problem}"
    key = ledger.RunKey(tenant, module, dt.date.fromisoformat(export_date))
    holder = f"{job_id}:{ctx.get('job_try', 1)}:{importer.worker_id}"
    try:
        async with importer.slots.hold(tenant, holder, importer.settings.importer_busy_defer):
            return await _with_connection(importer, key, job_id, time.monotonic())
    except Busy as busy:
        log.info("import deferred", tenant=tenant, module=module, export_date=export_date, reason=str(busy))
        raise Retry(defer=busy.defer * random.uniform(1.0, 2.0)) from None
    except RedisError as exc:
        # The tenant slot or the provider rate, before the attempt started (progress events never raise).
        log.warning("redis unavailable; import will be retried", job_id=job_id, error=type(exc).__name__)
        raise Retry(defer=backoff(importer.settings, 1, None)) from None


def _check_args(importer: Importer, tenant: str, module: str, export_date: str) -> str | None:
    if tenant not in importer.tenants.tenants:
        return f"unknown tenant {tenant!r}"
    if module not in importer.modules:
        return f"unknown module {module!r}"
    try:
        dt.date.fromisoformat(export_date)
    except (TypeError, ValueError):
        return f"export_date {export_date!r} is not YYYY-MM-DD"
    return None


async def _with_connection(importer: Importer, key: ledger.RunKey, job_id: str, started: float) -> str:
    try:
        async with importer.pool.acquire() as conn:
            locked = await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key.lock_name())
            if not locked:
                raise Busy("the same import is running on another worker", importer.settings.importer_busy_defer)
            done = await ledger.committed_outcome(conn, key, job_id)
            if done is not None:
                # arq handed the job out again (its outcome never reached Redis): it is done already.
                log.info("import already committed; not run again", job_id=job_id, outcome=done)
                return done
            await importer.rate.wait(importer.tenants.tenants[key.tenant].default, _RATE_WAIT)
            attempt = await ledger.start_attempt(conn, key, job_id, importer.worker_id)
            return await _attempt(importer, conn, key, job_id, attempt, started)
    except (Busy, Retry, RedisError):
        raise
    except Exception as exc:
        if _stopping():
            # Cancelled (the worker is stopping), and giving back a connection stuck in a cancelled COPY
            # raised on the way out: still a cancellation, so arq hands the job back instead of failing it.
            raise asyncio.CancelledError() from exc
        if not isinstance(exc, UNAVAILABLE):
            raise
        # The database went away (before the attempt was recorded, or taking the connection with it):
        # the next attempt closes whatever this one left as abandoned.
        log.warning("database unavailable; import will be retried", job_id=job_id, error=type(exc).__name__)
        raise Retry(defer=backoff(importer.settings, 1, None)) from None


def _stopping() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _attempt(
    importer: Importer,
    conn: asyncpg.Connection,
    key: ledger.RunKey,
    job_id: str,
    attempt: ledger.Attempt,
    started: float,
) -> str:
    settings = importer.settings
    record = RunRecord()
    rejects = Rejects(settings.importer_rejects_kept, settings.importer_reject_raw_chars)
    progress = Progress(
        importer.redis, settings.importer_progress_rows,
        run_id=attempt.id, tenant=key.tenant, module=key.module, export_date=key.export_date.isoformat(),
        worker=importer.worker_id, job_id=job_id,
    )  # fmt: skip
    await progress.started(attempt.number)
    bound = log.bind(run_id=attempt.id, tenant=key.tenant, module=key.module, export_date=key.export_date.isoformat())
    try:
        run = Run(
            settings, importer.session, conn, importer.modules.get(key.module), key, attempt, progress, record, rejects
        )
        status = await import_export_file(run)
    except ImportFailed as exc:
        return await _failed(importer, conn, job_id, attempt, exc, record, rejects, progress)
    except UNAVAILABLE:
        raise
    except _DATABASE_TRANSIENT as exc:
        transient = Transient("database", f"PostgreSQL: {type(exc).__name__}: {exc}"[:500])
        return await _failed(importer, conn, job_id, attempt, transient, record, rejects, progress)
    except asyncio.CancelledError:
        await _interrupted(importer, attempt, time.monotonic() - started)
        raise
    except Exception as exc:
        bound.exception("import failed unexpectedly")
        error = BadExport("internal_error", f"{type(exc).__name__}: {exc}"[:500])
        return await _failed(importer, conn, job_id, attempt, error, record, rejects, progress)
    outcome = record.outcome()
    bound.info("import finished", status=status, rows=outcome.rows_imported, rejected=outcome.rows_rejected,
               seconds=outcome.seconds)  # fmt: skip
    await progress.finished(status, outcome)
    return f"{status}: {outcome.rows_imported} rows imported, {outcome.rows_rejected} rejected"


async def _failed(
    importer: Importer,
    conn: asyncpg.Connection,
    job_id: str,
    attempt: ledger.Attempt,
    error: ImportFailed,
    record: RunRecord,
    rejects: Rejects,
    progress: Progress,
) -> str:
    used = await ledger.attempts_of_job(conn, job_id)
    retry = error.transient and used < importer.settings.importer_max_attempts
    outcome = record.outcome(error)
    await ledger.finish(conn, attempt, "failed", outcome, rejects.kept, error=error, will_retry=retry)
    await progress.finished("failed", outcome, error=error.code)
    log.warning(
        "import failed", run_id=attempt.id, job_id=job_id, error=error.code, message=error.message, will_retry=retry
    )
    if retry:
        retry_after = error.retry_after if isinstance(error, Transient) else None
        raise Retry(defer=backoff(importer.settings, used, retry_after))
    return f"failed: {error.code}: {error.message}"


async def _interrupted(importer: Importer, attempt: ledger.Attempt, elapsed: float) -> None:
    """Record a cancelled attempt: arq's timeout fails the job, a stopping importer hands it back to the queue."""
    timed_out = elapsed >= importer.settings.importer_import_timeout - 1
    code, message = (
        (
            "timeout",
            f"the import ran longer than IMPORTER_IMPORT_TIMEOUT ({importer.settings.importer_import_timeout:.0f} s)",
        )
        if timed_out
        else ("interrupted", "the importer stopped during the import; the job goes back to the queue")
    )
    try:
        # Shielded and on a fresh connection: this one is in the middle of the cancelled statement.
        await asyncio.shield(_record_interruption(importer, attempt, code, message, not timed_out))
    except (asyncio.CancelledError, *UNAVAILABLE, asyncpg.PostgresError) as exc:
        log.warning("could not record the interrupted import", run_id=attempt.id, error=type(exc).__name__)


async def _record_interruption(
    importer: Importer, attempt: ledger.Attempt, code: str, message: str, retry: bool
) -> None:
    async with asyncio.timeout(5):
        async with importer.pool.acquire() as conn:
            await ledger.fail_interrupted(conn, attempt, code, message, retry)
