"""The part of the import ledger (``import_runs``) that more than the importer writes: queued attempts.

The importers own the ledger (services/importer/ledger.py); an
operator re-running an import, from ``conduit imports rerun`` or the console,
adds a ``queued`` attempt that the worker picking the job up takes over.
Both go through this module (and :mod:`shared.reruns`), so the two can never
queue an attempt in two different ways.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class RunKey:
    tenant: str
    module: str
    export_date: dt.date

    def lock_name(self) -> str:
        return f"import-run:{self.tenant}:{self.module}:{self.export_date.isoformat()}"


@dataclass(frozen=True)
class Attempt:
    id: int
    number: int


_NEXT_ATTEMPT = """
INSERT INTO import_runs (tenant_id, module, export_date, attempt, job_id, status, worker_id, queued_at, started_at)
SELECT $1, $2, $3, coalesce(max(attempt), 0) + 1, $4, $5, $6,
       clock_timestamp(), CASE WHEN $5 = 'running' THEN clock_timestamp() END
FROM import_runs WHERE tenant_id = $1 AND module = $2 AND export_date = $3
ON CONFLICT (tenant_id, module, export_date, attempt) DO NOTHING
RETURNING id, attempt
"""


async def insert_attempt(
    conn: asyncpg.Connection, key: RunKey, job_id: str, status: str, worker: str | None
) -> Attempt:
    # Two writers may pick the same next number (an operator queueing while a worker starts); the loser retries.
    while True:
        row = await conn.fetchrow(_NEXT_ATTEMPT, key.tenant, key.module, key.export_date, job_id, status, worker)
        if row is not None:
            return Attempt(row["id"], row["attempt"])


async def queue_attempt(conn: asyncpg.Connection, key: RunKey, job_id: str) -> Attempt:
    """A ``queued`` row for a run an operator enqueued; the worker that picks the job up takes it over."""
    return await insert_attempt(conn, key, job_id, "queued", None)


async def active_runs(conn: asyncpg.Connection, key: RunKey) -> list[dict[str, Any]]:
    """Attempts of this (tenant, module, date) that are queued or running."""
    rows = await conn.fetch(
        "SELECT id, job_id, status FROM import_runs WHERE tenant_id = $1 AND module = $2 AND export_date = $3 "
        "AND status = ANY($4::text[])",
        key.tenant,
        key.module,
        key.export_date,
        list(ACTIVE),
    )
    return [dict(r) for r in rows]


async def mark_lost(conn: asyncpg.Connection, run_id: int) -> None:
    """A ``queued`` row whose job is no longer in the queue (Redis flushed, job expired) can never run."""
    await conn.execute(
        "UPDATE import_runs SET status = 'failed', error_class = 'lost', "
        "error_message = 'the queued job disappeared from the queue before a worker picked it up', "
        "finished_at = clock_timestamp() "
        "WHERE id = $1 AND status = 'queued'",
        run_id,
    )


async def mark_cancelled(conn: asyncpg.Connection, job_id: str, who: str) -> int:
    """The ``queued`` rows of a job an operator took off the queue; returns how many."""
    done = await conn.execute(
        "UPDATE import_runs SET status = 'failed', error_class = 'cancelled', error_message = $2, "
        "finished_at = clock_timestamp() WHERE job_id = $1 AND status = 'queued'",
        job_id,
        f"cancelled by {who} before a worker picked it up",
    )
    return int(done.split()[-1])


async def first_rejects(conn: asyncpg.Connection, run_id: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """A run's first ``limit`` rejected rows by line, and how many it kept (`conduit imports show`, the console)."""
    rows = await conn.fetch(
        "SELECT line, column_name, reason, raw FROM import_rejects WHERE run_id = $1 ORDER BY line LIMIT $2",
        run_id,
        limit,
    )
    kept = await conn.fetchval("SELECT count(*) FROM import_rejects WHERE run_id = $1", run_id)
    return [dict(r) for r in rows], kept
