"""`conduit scheduler`: run the scheduler, or `conduit scheduler plan` to see what it would enqueue.

`conduit scheduler` loads this module before it holds SIGTERM/SIGINT, so what only `plan` needs (asyncio,
orjson, tabulate) is imported in `plan`.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from typing import Any

import click

from conduit.cli_support import StoreUnreachable, guard, hold_stops, reaching_redis


@click.group(invoke_without_command=True)
@click.pass_context
def scheduler(ctx: click.Context) -> None:
    """Run the scheduler (token refreshes and the daily imports); `plan` shows a day's imports."""
    if ctx.invoked_subcommand is None:
        hold_stops()
        from services.scheduler.main import main as run

        guard(run)


@scheduler.command("plan")
@click.option(
    "--date",
    "day",
    type=click.DateTime(["%Y-%m-%d"]),
    help="The day the schedules fire on, in each schedule's own time zone. Default: today (UTC).",
)
@click.option("--tenant", help="Only this tenant.")
@click.option("--module", help="Only this module.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per import instead of a table.")
def plan(day: datetime | None, tenant: str | None, module: str | None, as_json: bool) -> None:
    """Print the imports the schedules fire on a day and when each starts, without enqueuing anything.

    The state column says whether the schedulers already enqueued the job (read from Redis;
    "?" when Redis cannot be reached: the plan is printed all the same, and the exit code is 1).
    """
    import asyncio

    on = day.date() if day else datetime.now(UTC).date()
    rows, unreachable = guard(lambda: asyncio.run(_plan_rows(on, tenant, module)))
    _print_plan(rows, on, as_json)
    if unreachable is not None:
        click.echo(f"Error: {unreachable.message}; the state column is unknown (?)", err=True)
        sys.exit(1)


def _print_plan(rows: list[dict[str, Any]], on: date, as_json: bool) -> None:
    import orjson
    from tabulate import tabulate

    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    headers = ["fires (UTC)", "starts (UTC)", "tenant", "module", "export date", "schedule", "state"]
    table = [
        [
            _utc(r["fires_at"]),
            _utc(r["starts_at"]),
            r["tenant"],
            r["module"],
            r["export_date"],
            f"{r['cron']} {r['timezone']}",
            r["state"],
        ]
        for r in rows
    ]
    click.echo(tabulate(table, headers=headers))
    click.echo(f"\n{len(rows)} imports fire on {on.isoformat()}")


async def _plan_rows(
    on: date, tenant: str | None, module: str | None
) -> tuple[list[dict[str, Any]], StoreUnreachable | None]:
    from services.scheduler.import_plan import plan_fire
    from services.scheduler.main import catalogue_modules
    from services.scheduler.settings import SchedulerSettings
    from shared.schedules import import_entries
    from shared.tenants import load_tenants

    settings = SchedulerSettings()
    tenants = load_tenants(settings.tenants_file, resolve_secrets=False)
    if tenant is not None and tenant not in tenants.tenants:
        raise click.ClickException(f"unknown tenant {tenant!r} (known: {', '.join(tenants.tenants)})")
    rows = []
    for schedule, entries in import_entries(tenants, catalogue_modules()).items():
        chosen = [e for e in entries if tenant in (None, e.tenant) and module in (None, e.module)]
        for fire in schedule.fires_on(on) if chosen else []:
            for job in plan_fire(schedule, fire, chosen, now=0.0):
                rows.append({**_row(job), "cron": schedule.cron, "timezone": schedule.timezone})
    rows.sort(key=lambda r: (r["starts_at"], r["tenant"], r["module"]))
    try:
        with reaching_redis(settings.redis_url):
            await _add_state(settings, rows)
    except StoreUnreachable as exc:
        for r in rows:
            r["state"] = "?"
        return rows, exc
    return rows, None


def _row(job: Any) -> dict[str, Any]:
    return {
        "tenant": job.tenant,
        "module": job.module,
        "export_date": job.export_date,
        "job_id": job.job_id,
        "fires_at": job.fire_at,
        "starts_at": job.run_at,
    }


async def _add_state(settings: Any, rows: list[dict[str, Any]]) -> None:
    from services.scheduler.enqueue import in_ledger
    from services.scheduler.main import connect

    redis = connect(settings)
    by_date: dict[str, list[str]] = {}
    for r in rows:
        by_date.setdefault(r["export_date"], []).append(r["job_id"])
    try:
        done = await in_ledger(redis, by_date)
    finally:
        await redis.aclose()
    for r in rows:
        r["state"] = "enqueued" if r["job_id"] in done else "pending"


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
