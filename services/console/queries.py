"""What the console reads from PostgreSQL: a page of the ledger, one run, its rejects; and the audit it writes.

The imports page is keyset-paginated (``WHERE (sort, id) < (last seen)``,
never OFFSET), so page 500 costs what page 1 costs; every filter has an index
(migrations/0005_console.sql), and the error search uses a full-text index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from services.console.filters import SORTS, ImportFilters
from shared import import_runs

_COLUMNS = (
    "id, tenant_id, module, export_date, attempt, job_id, status, will_retry, rows_read, rows_imported, "
    "rows_rejected, rows_duplicate, rows_changed, rows_deleted, bytes_received, bytes_csv, stage_seconds, "
    "ignored_columns, error_class, error_message, parse_path, worker_id, queued_at, started_at, finished_at"
)
_LIST_COLUMNS = (
    "id, tenant_id, module, export_date, attempt, status, will_retry, rows_read, rows_imported, rows_rejected, "
    "stage_seconds->>'total' AS seconds, error_class, left(error_message, 160) AS error_message, parse_path, "
    "started_at, finished_at"
)


def _where(f: ImportFilters) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []

    def add(sql: str, value: Any) -> None:
        args.append(value)
        clauses.append(sql.replace("$?", f"${len(args)}"))

    for column, value in (("tenant_id", f.tenant), ("module", f.module), ("status", f.status)):
        if value is not None:
            add(f"{column} = $?", value)
    if f.date_from:
        add("export_date >= $?", f.date_from)
    if f.date_to:
        add("export_date <= $?", f.date_to)
    if f.path:
        add("starts_with(parse_path, $?)", f.path)
    if f.q:
        add("to_tsvector('simple', coalesce(error_message, '')) @@ plainto_tsquery('simple', $?)", f.q)
    return clauses, args


def list_sql(f: ImportFilters, limit: int) -> tuple[str, list[Any]]:
    clauses, args = _where(f)
    column = SORTS[f.sort]
    op, order = ("<", "DESC") if f.descending else (">", "ASC")
    if f.after is not None:
        if column == "id":
            args.append(f.after[1])
            clauses.append(f"id {op} ${len(args)}")
        else:
            args += [f.after[0], f.after[1]]
            clauses.append(f"({column}, id) {op} (${len(args) - 1}, ${len(args)})")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    order_by = f"id {order}" if column == "id" else f"{column} {order}, id {order}"
    args.append(limit)
    return f"SELECT {_LIST_COLUMNS} FROM import_runs {where} ORDER BY {order_by} LIMIT ${len(args)}", args


async def list_page(conn: asyncpg.Connection, f: ImportFilters, size: int) -> tuple[list[dict[str, Any]], Any]:
    """One page of runs and the cursor of the next (None on the last page)."""
    sql, args = list_sql(f, size + 1)
    rows = [dict(r) for r in await conn.fetch(sql, *args)]
    if len(rows) <= size:
        return rows, None
    last = rows[size - 1]
    return rows[:size], (last[SORTS[f.sort]], last["id"])


async def get_run(conn: asyncpg.Connection, run_id: int, rejects: int = 20) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM import_runs WHERE id = $1", run_id)
    if row is None:
        return None
    run = dict(row)
    run["rejects"], run["rejects_kept"] = await import_runs.first_rejects(conn, run_id, rejects)
    run["attempts"] = [
        dict(r)
        for r in await conn.fetch(
            "SELECT id, attempt, status, started_at, finished_at FROM import_runs "
            "WHERE tenant_id = $1 AND module = $2 AND export_date = $3 ORDER BY attempt",
            run["tenant_id"],
            run["module"],
            run["export_date"],
        )
    ]
    return run


async def rejects(conn: asyncpg.Connection, run_id: int, batch: int = 1000) -> AsyncIterator[list[asyncpg.Record]]:
    """Every kept reject of a run, by line, in batches from a server-side cursor (memory stays flat)."""
    async with conn.transaction():
        cursor = await conn.cursor(
            "SELECT line, column_name, reason, raw FROM import_rejects WHERE run_id = $1 ORDER BY line", run_id
        )
        while chunk := await cursor.fetch(batch):
            yield chunk


async def audit(conn: asyncpg.Connection, who: str, role: str, action: str, target: str, outcome: Any) -> None:
    await conn.execute(
        "INSERT INTO console_audit (who, role, action, target, outcome) VALUES ($1, $2, $3, $4, $5)",
        who,
        role,
        action,
        target,
        outcome,
    )


async def recent_audit(conn: asyncpg.Connection, limit: int = 50) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT at, who, role, action, target, outcome FROM console_audit ORDER BY id DESC LIMIT $1", limit
    )
    return [{**dict(r), "outcome": orjson.dumps(r["outcome"]).decode()} for r in rows]
