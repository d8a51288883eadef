"""The ledger: ``import_runs`` (one row per attempt) and ``import_rejects``, written by workers, read by the CLI.

An attempt is ``running`` while a worker has it; it ends ``succeeded``,
``partially_rejected`` (imported, some rows rejected) or ``failed``, written
in the same transaction as the merge when there is one, so the ledger and the
module's table never disagree. ``queued`` rows are runs an operator asked for
(``conduit imports rerun``/``run``) that no worker has picked up yet.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.importer.errors import ImportFailed
from services.importer.stats import Outcome
from services.importer.validate import Reject
from shared import import_runs

# Queued attempts are written by operators too (shared/reruns.py); the importer re-exports them from here.
from shared.import_runs import ACTIVE as ACTIVE
from shared.import_runs import Attempt as Attempt
from shared.import_runs import RunKey as RunKey
from shared.import_runs import active_runs as active_runs
from shared.import_runs import insert_attempt
from shared.import_runs import mark_lost as mark_lost
from shared.import_runs import queue_attempt as queue_attempt

FINAL = ("succeeded", "partially_rejected", "failed")
ABANDONED = "the importer running this attempt stopped before it finished (killed, or it lost its database connection)"


async def start_attempt(conn: asyncpg.Connection, key: RunKey, job_id: str, worker: str) -> Attempt:
    """Close attempts a dead worker left ``running``, then take over this job's queued row or add an attempt.

    The caller holds the run's advisory lock, so no other live worker is running this import.
    """
    async with conn.transaction():
        await conn.execute(
            "UPDATE import_runs SET status = 'failed', error_class = 'abandoned', error_message = $4, "
            "finished_at = clock_timestamp() "
            "WHERE tenant_id = $1 AND module = $2 AND export_date = $3 AND status = 'running'",
            key.tenant,
            key.module,
            key.export_date,
            ABANDONED,
        )
        row = await conn.fetchrow(
            "UPDATE import_runs SET status = 'running', started_at = clock_timestamp(), worker_id = $2 "
            "WHERE job_id = $1 AND status = 'queued' RETURNING id, attempt",
            job_id,
            worker,
        )
        if row is not None:
            return Attempt(row["id"], row["attempt"])
        return await insert_attempt(conn, key, job_id, "running", worker)


async def committed_outcome(conn: asyncpg.Connection, key: RunKey, job_id: str) -> str | None:
    """What the job returned if its latest attempt committed an import (as ``import_export`` words it), else None.

    A failed attempt is not final in this sense: running the job again is what a retry is.
    """
    # The key first: the unique (tenant_id, module, export_date, attempt) index finds the rows.
    row = await conn.fetchrow(
        "SELECT status, rows_imported, rows_rejected FROM import_runs "
        "WHERE tenant_id = $1 AND module = $2 AND export_date = $3 AND job_id = $4 AND status <> 'queued' "
        "ORDER BY attempt DESC LIMIT 1",
        key.tenant,
        key.module,
        key.export_date,
        job_id,
    )
    if row is None or row["status"] not in ("succeeded", "partially_rejected"):
        return None
    return f"{row['status']}: {row['rows_imported']} rows imported, {row['rows_rejected']} rejected"


async def attempts_of_job(conn: asyncpg.Connection, job_id: str) -> int:
    """How many times this job has started (its retry budget counts these)."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM import_runs WHERE job_id = $1 AND status <> 'queued'", job_id
    )
    return count


async def finish(
    conn: asyncpg.Connection,
    attempt: Attempt,
    status: str,
    outcome: Outcome,
    rejects: list[Reject],
    error: ImportFailed | None = None,
    note: str | None = None,
    will_retry: bool = False,
) -> None:
    """Write an attempt's outcome and its kept rejects."""
    imported = outcome.rows_imported if status in ("succeeded", "partially_rejected") else 0
    await conn.execute(
        """
        UPDATE import_runs SET status = $2, will_retry = $3, rows_read = $4, rows_imported = $5, rows_rejected = $6,
            rows_duplicate = $7, rows_changed = $8, rows_deleted = $9, bytes_received = $10, bytes_csv = $11,
            stage_seconds = $12, ignored_columns = $13, error_class = $14, error_message = $15, parse_path = $16,
            finished_at = clock_timestamp()
        WHERE id = $1
        """,
        attempt.id,
        status,
        will_retry,
        outcome.rows_read,
        imported,
        outcome.rows_rejected,
        outcome.rows_duplicate if imported else 0,
        outcome.rows_changed if imported else 0,
        outcome.rows_deleted if imported else 0,
        outcome.bytes_received,
        outcome.bytes_csv,
        outcome.seconds,
        outcome.ignored_columns,
        error.code if error else None,
        error.message if error else note,
        outcome.parse_path,
    )
    if rejects:
        await conn.copy_records_to_table(
            "import_rejects",
            records=[(attempt.id, r.line, r.column, r.reason, r.raw) for r in rejects],
            columns=["run_id", "line", "column_name", "reason", "raw"],
        )


async def fail_interrupted(
    conn: asyncpg.Connection, attempt: Attempt, code: str, message: str, will_retry: bool
) -> None:
    """Mark an attempt that was cancelled (worker stopping, job timeout) as failed."""
    await conn.execute(
        "UPDATE import_runs SET status = 'failed', will_retry = $2, error_class = $3, error_message = $4, "
        "finished_at = clock_timestamp() WHERE id = $1 AND status = 'running'",
        attempt.id,
        will_retry,
        code,
        message,
    )


_COLUMNS = """
SELECT id, tenant_id, module, export_date, attempt, job_id, status, will_retry, rows_read, rows_imported,
       rows_rejected, rows_duplicate, rows_changed, rows_deleted, bytes_received, bytes_csv, stage_seconds,
       ignored_columns, error_class, error_message, parse_path, worker_id, queued_at, started_at, finished_at
FROM import_runs
"""
_LIST = (
    _COLUMNS
    + """
WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR tenant_id = $2) AND ($3::text IS NULL OR module = $3)
  AND ($4::date IS NULL OR export_date >= $4) AND ($5::date IS NULL OR export_date <= $5)
  AND (NOT $6 OR id IN (SELECT DISTINCT ON (tenant_id, module, export_date) id FROM import_runs
                        ORDER BY tenant_id, module, export_date, attempt DESC))
ORDER BY id DESC
LIMIT $7
"""
)


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    tenant: str | None = None
    module: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    # Only the latest attempt of each (tenant, module, export date).
    latest: bool = False
    limit: int = 100


async def list_runs(conn: asyncpg.Connection, filters: Filters) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        _LIST,
        filters.status,
        filters.tenant,
        filters.module,
        filters.date_from,
        filters.date_to,
        filters.latest,
        filters.limit,
    )
    return [dict(r) for r in rows]


async def get_run(conn: asyncpg.Connection, run_id: int, rejects: int = 20) -> dict[str, Any] | None:
    """One attempt with its first ``rejects`` rejected rows (by line) and the total kept."""
    row = await conn.fetchrow(_COLUMNS + " WHERE id = $1", run_id)
    if row is None:
        return None
    run = dict(row)
    run["rejects"], run["rejects_kept"] = await import_runs.first_rejects(conn, run_id, rejects)
    return run
