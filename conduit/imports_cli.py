"""`conduit imports ...`: the import ledger, re-running imports, importing now, and module DDL."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import click
import orjson
from tabulate import tabulate

from conduit.cli_support import guard, reaching_postgres, reaching_redis

STATUSES = ("queued", "running", "succeeded", "failed", "partially_rejected")


@click.group()
def imports() -> None:
    """Inspect, re-run and start imports; print a module's table definition."""


def _filters(function: Any) -> Any:
    for option in reversed(
        [
            click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status."),
            click.option("--tenant", help="Only this tenant."),
            click.option("--module", help="Only this module."),
            click.option(
                "--from",
                "--since",
                "date_from",
                type=click.DateTime(["%Y-%m-%d"]),
                help="Export date from (YYYY-MM-DD); --since is the same.",
            ),
            click.option("--to", "date_to", type=click.DateTime(["%Y-%m-%d"]), help="Export date to (YYYY-MM-DD)."),
        ]
    ):
        function = option(function)
    return function


@imports.command("list")
@_filters
@click.option("--latest", is_flag=True, help="Only the latest attempt of each tenant, module and date.")
@click.option(
    "--all-attempts", is_flag=True, help="With --status: every attempt with that status, superseded ones too."
)
@click.option("--limit", default=50, show_default=True, help="At most this many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def imports_list(as_json: bool, latest: bool, all_attempts: bool, limit: int, **filters: Any) -> None:
    """List import runs (one row per attempt), newest first.

    With --status, only imports whose latest attempt has that status (`--status failed`: what is
    failed now, not an attempt a later one superseded); --all-attempts lists every matching attempt.
    """
    from services.importer.ledger import Filters, list_runs

    if latest and all_attempts:
        raise click.UsageError("--latest and --all-attempts contradict each other")
    latest = latest or (filters.get("status") is not None and not all_attempts)
    query = Filters(**_dates(filters), latest=latest, limit=limit)
    runs = guard(lambda: asyncio.run(_with_db(lambda conn: list_runs(conn, query))))
    if as_json:
        click.echo(_json(runs))
        return
    headers = ["id", "tenant", "module", "date", "try", "status", "read", "imported", "rejected", "seconds", "error"]
    table = [
        [
            r["id"], r["tenant_id"], r["module"], r["export_date"], r["attempt"],
            r["status"] + (" (retrying)" if r["will_retry"] else ""),
            r["rows_read"], r["rows_imported"], r["rows_rejected"], r["stage_seconds"].get("total", "-"),
            _printable((r["error_class"] or "")[:30]),
        ]
        for r in runs
    ]  # fmt: skip
    click.echo(tabulate(table, headers=headers))


@imports.command("show")
@click.argument("run_id", type=int)
@click.option("--rejects", default=10, show_default=True, help="How many of the first rejected rows to show.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
def imports_show(run_id: int, rejects: int, as_json: bool) -> None:
    """Show one run: counts, timings per stage, the error, and the first rejected rows."""
    from services.importer.ledger import get_run

    run = guard(lambda: asyncio.run(_with_db(lambda conn: get_run(conn, run_id, rejects))))
    if run is None:
        raise click.ClickException(f"no import run {run_id}")
    if as_json:
        click.echo(_json(run))
        return
    skip = {"rejects", "stage_seconds", "rejects_kept"}
    click.echo(tabulate([[k, _shown(v)] for k, v in run.items() if k not in skip], tablefmt="plain"))
    stages = ", ".join(f"{k} {v:.3f}" for k, v in run["stage_seconds"].items())
    click.echo(f"seconds          {stages or '-'}")
    if run["rejects"]:
        click.echo(
            f"\nfirst rejected rows ({len(run['rejects'])} of {run['rows_rejected']}; {run['rejects_kept']} kept):"
        )
        table = [
            [r["line"], _shown(r["column_name"]), _shown(r["reason"]), _printable((r["raw"] or "")[:60])]
            for r in run["rejects"]
        ]
        click.echo(tabulate(table, headers=["line", "column", "reason", "raw"]))


@imports.command("rerun")
@click.argument("run_id", type=int, required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Every (tenant, module, date) whose latest attempt failed.")
@_filters
def imports_rerun(run_id: int | None, all_failed: bool, **filters: Any) -> None:
    """Enqueue one run again (RUN_ID), or all failed ones matching the filters (--failed).

    Never a second job for an import that is queued or running: those are skipped and said so.
    """
    if (run_id is None) == (not all_failed):
        raise click.UsageError("give a RUN_ID or --failed (with filters), not both")
    if filters.get("status"):
        raise click.UsageError("--status does not apply: --failed picks failed runs")
    done = guard(lambda: asyncio.run(_rerun(run_id, _dates(filters))))
    for line in done.lines:
        click.echo(line)
    click.echo(f"enqueued {done.enqueued}, skipped {done.skipped}")
    if run_id is not None and not done.enqueued:
        sys.exit(1)


@imports.command("run")
@click.argument("tenant")
@click.argument("module")
@click.option("--date", "export_date", type=click.DateTime(["%Y-%m-%d"]), help="Export date (default: yesterday, UTC).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for an importer to finish the import.")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to wait with --wait.")
def imports_run(tenant: str, module: str, export_date: dt.datetime | None, wait: bool, timeout: float) -> None:
    """Import TENANT's MODULE export now: enqueue it for the importers and (by default) wait for the outcome."""
    day = (export_date.date() if export_date else dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    done = guard(lambda: asyncio.run(_run_now(tenant, module, day, wait, timeout)))
    click.echo(done)
    if done.startswith(("failed", "refused", "skipped", "not finished")):
        sys.exit(1)


@imports.command("ddl")
@click.argument("module")
def imports_ddl(module: str) -> None:
    """Print the CREATE TABLE a module's definition needs (for its migration)."""
    from services.importer.schema import create_table_sql
    from shared.modules import catalogue

    try:
        click.echo(create_table_sql(catalogue().get(module)), nl=False)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None


@imports.command("modules")
def imports_modules() -> None:
    """List the modules of the catalogue with their tables and keys."""
    from shared.modules import catalogue

    table = [[m.name, m.table_name, ", ".join(m.key), len(m.columns), m.missing_rows, m.encoding] for m in catalogue()]
    click.echo(tabulate(table, headers=["module", "table", "key", "columns", "missing rows", "encoding"]))


# --- plumbing ---------------------------------------------------------------------------------------------


def _dates(filters: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.date() if isinstance(v, dt.datetime) else v) for k, v in filters.items()}


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return _printable(", ".join(map(str, value))) or "-"
    return _printable(str(value))


def _printable(text: str) -> str:
    """Text an export wrote (a rejected row, a message quoting it) as the terminal shows it: a control or format
    character (an escape sequence, a line break that would forge a row, a right-to-left override) escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


async def _with_db(action: Any) -> Any:
    from shared.db import DatabaseSettings, create_pool

    url = DatabaseSettings().database_url
    with reaching_postgres(url):
        pool = await create_pool(url, min_size=1, max_size=2, application_name="conduit-cli")
        try:
            async with pool.acquire() as conn:
                return await action(conn)
        finally:
            await pool.close()


@asynccontextmanager
async def _queue_and_db() -> AsyncIterator[tuple[Any, Any]]:
    from services.importer.settings import ImporterSettings
    from shared.db import create_pool as create_db_pool
    from shared.job_json import create_pool
    from shared.redis_connect import arq_settings

    settings = ImporterSettings()
    # One try: an operator at a prompt wants "Redis is down" now, not after arq's five retries.
    redis_settings = replace(arq_settings(settings.redis_url, settings.redis_location()), conn_retries=0)
    with reaching_redis(settings.redis_url):
        arq = await create_pool(redis_settings)
        try:
            with reaching_postgres(settings.database_url):
                pool = await create_db_pool(
                    settings.database_url, min_size=1, max_size=2, application_name="conduit-cli"
                )
                try:
                    async with pool.acquire() as conn:
                        yield arq, conn
                finally:
                    await pool.close()
        finally:
            await arq.aclose()


async def _rerun(run_id: int | None, filters: dict[str, Any]) -> Any:
    from services.importer.ledger import get_run
    from shared import reruns

    async with _queue_and_db() as (arq, conn):
        if run_id is not None:
            run = await get_run(conn, run_id, rejects=0)
            if run is None:
                raise click.ClickException(f"no import run {run_id}")
            keys = reruns.keys_of([run])
        else:
            wanted = {k: v for k, v in filters.items() if k != "status"}
            keys = await reruns.failed_latest(conn, reruns.FailedFilter(**wanted))
        return await reruns.rerun(arq, conn, keys)


async def _run_now(tenant: str, module: str, day: str, wait: bool, timeout: float) -> str:
    from arq.jobs import Job

    from shared.import_runs import RunKey
    from shared.job_json import JobFailed
    from shared.reruns import enqueue

    async with _queue_and_db() as (arq, conn):
        line = await enqueue(arq, conn, RunKey(tenant, module, dt.date.fromisoformat(day)))
        if not wait or not line.startswith("enqueued"):
            return line
        job_id = line.split(" as job ", 1)[1].split(" ", 1)[0]
        click.echo(line, err=True)
        try:
            result = await Job(job_id, arq, _deserializer=arq.job_deserializer).result(timeout=timeout, poll_delay=0.2)
        except TimeoutError:
            return f"not finished after {timeout:.0f} s (is an importer running?); job {job_id} stays queued"
        except JobFailed as exc:  # the job raised: its exception's type and message, as the importer kept them
            raise click.ClickException(f"job {job_id} failed: {_printable(str(exc))}") from None
        return str(result)
