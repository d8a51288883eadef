"""The console's pages (GET): the live board and its stream, imports, a run, its rejects, tokens, schedules."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from redis.exceptions import RedisError

from services.console import keys, queries
from services.console.auth import user
from services.console.board import sse_frame
from services.console.filters import STATUSES, BadFilter, parse
from services.console.sessions import COOKIE, Sessions
from shared import pauses
from shared.jobs import import_job_id
from shared.modules import catalogue
from shared.redis_keys import scheduler_imports
from shared.schedules import import_entries

_HEARTBEAT = 15.0


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    return aiohttp_jinja2.render_template(template, request, {"user": user(request), **context}, status=status)


async def board_page(request: web.Request) -> web.Response:
    return render(request, "board.html", {"board": request.app[keys.BOARD].view(), "page": "board"})


async def board_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the board's HTML whenever it changes (htmx's SSE extension swaps it in).

    The session is looked up again before every frame (one Redis GET, at most one per push interval).
    """
    board = request.app[keys.BOARD]
    sessions, session_id = request.app[keys.SESSIONS], request.cookies.get(COOKIE)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    queue = board.subscribe()
    try:
        await response.prepare(request)
        env = aiohttp_jinja2.get_env(request.app)
        await response.write(b"retry: 1000\n\n" + sse_frame("board", env.get_template("_board.html").render(
            board=board.view())))  # fmt: skip
        while True:
            try:
                frame = await asyncio.wait_for(queue.get(), _HEARTBEAT)
            except TimeoutError:
                frame = b": keep-alive\n\n"
            # Signed out (here or on another replica) or expired: nothing more goes to this browser.
            if frame is None or not await _still_signed_in(sessions, session_id):
                break
            await response.write(frame)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        board.unsubscribe(queue)
    return response


async def _still_signed_in(sessions: Sessions, session_id: str | None) -> bool:
    try:
        return await sessions.get(session_id) is not None
    except RedisError:
        # No one can sign out while Redis is away (the session cannot be dropped): the board stays up.
        return True


async def imports_page(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    try:
        filters = parse(request.query, settings.console_filter_max_chars)
    except BadFilter as exc:
        return render(request, "imports.html", {"error": str(exc), "page": "imports", "runs": [], "filters": None,
                                                "statuses": STATUSES}, status=400)  # fmt: skip
    async with request.app[keys.POOL].acquire() as conn:
        runs, after = await queries.list_page(conn, filters, settings.console_page_size)
    context = {
        "page": "imports", "runs": runs, "filters": filters, "statuses": STATUSES, "error": None,
        "next_query": filters.query(after=after) if after else None,
        "first_query": filters.query(after=None) if filters.after else None,
    }  # fmt: skip
    return render(request, "imports.html", context)


def _run_id(request: web.Request) -> int:
    raw = request.match_info["run_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound(text=f"no import run {raw[:40]!r}")
    return int(raw)


async def run_page(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    async with request.app[keys.POOL].acquire() as conn:
        run = await queries.get_run(conn, run_id)
    if run is None:
        return render(request, "not_found.html", {"what": f"import run {run_id}", "page": "imports"}, status=404)
    stages = [(k, v) for k, v in (run["stage_seconds"] or {}).items() if k != "total"]
    return render(request, "run.html", {"run": run, "stages": stages, "page": "imports"})


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): the third party's
# rejected bytes must reach the operator's screen as text, so such a cell gets a leading apostrophe (OWASP).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert(value: str) -> str:
    """The value as a spreadsheet shows it as text: a leading ' where it would start a formula."""
    return "'" + value if value.startswith(_FORMULA_START) else value


async def run_rejects_csv(request: web.Request) -> web.StreamResponse:
    """Every kept reject of a run as CSV, streamed from a server-side cursor."""
    run_id = _run_id(request)
    pool = request.app[keys.POOL]
    async with pool.acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM import_runs WHERE id = $1", run_id) is None:
            raise web.HTTPNotFound(text=f"no import run {run_id}")
        response = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="run-{run_id}-rejects.csv"',
        })  # fmt: skip
        await response.prepare(request)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["line", "column", "reason", "raw"])
        async for chunk in queries.rejects(conn, run_id):
            writer.writerows(
                (r["line"], inert(r["column_name"] or ""), inert(r["reason"]), inert(r["raw"] or "")) for r in chunk
            )
            await response.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
        await response.write(buffer.getvalue().encode())
        await response.write_eof()
    return response


async def tokens_page(request: web.Request) -> web.Response:
    """State of every tenant's tokens; the view is built field by field and never holds a token."""
    store = request.app[keys.TOKENS]
    tenants = request.app[keys.TENANTS]
    rows: list[dict[str, Any]] = []
    now = time.time()
    for tenant, provider in tenants.pairs():
        record = await store.get(tenant, provider) if store is not None else None
        rows.append(token_view(tenant, provider, record, now))
    return render(request, "tokens.html", {"rows": rows, "readable": store is not None, "page": "tokens"})


def token_view(tenant: str, provider: str, record: Any, now: float) -> dict[str, Any]:
    if record is None:
        return {"tenant": tenant, "provider": provider, "state": "no token yet"}
    blocked = record.refresh_blocked_until()
    if record.error_kind == "permanent":
        state = "refused (needs an operator)"
    elif record.error_kind == "transient":
        state = "failing, backing off"
    elif record.access_token is None or record.expires_at <= now:
        state = "expired"
    else:
        state = "ok"
    return {
        "tenant": tenant, "provider": provider, "state": state, "generation": record.generation,
        "age": now - record.issued_at if record.issued_at else None,
        "expires_in": record.expires_at - now if record.expires_at else None,
        "last_refresh_at": record.last_refresh_at, "last_refresh_how": record.last_refresh_how,
        "failures": record.failures, "last_error": record.last_error,
        "backoff": blocked - now if blocked and blocked > now else None,
    }  # fmt: skip


async def schedules_page(request: web.Request) -> web.Response:
    tenants = request.app[keys.TENANTS]
    tenant = request.query.get("tenant") or None
    if tenant is not None and tenant not in tenants.tenants:
        return render(request, "not_found.html", {"what": f"tenant {tenant[:80]!r}", "page": "schedules"}, status=404)
    now = time.time()
    redis = request.app[keys.REDIS]
    paused = await pauses.paused_schedules(redis)
    rows: list[dict[str, Any]] = []
    for schedule, entries in import_entries(tenants, catalogue().names()).items():
        chosen = [e for e in entries if tenant in (None, e.tenant)]
        if not chosen:
            continue
        upcoming = schedule.fires(now, now + 8 * 86400)
        past = schedule.fires(now - 86400, now)
        last = past[-1] if past else None
        done = await _enqueued(redis, last.export_date, chosen) if last else set()
        for entry in chosen:
            rows.append(_schedule_row(schedule, entry, upcoming, last, done, paused))
    rows.sort(key=lambda r: (r["tenant"], r["module"]))
    choices = sorted(tenants.tenants)
    return render(request, "schedules.html", {"rows": rows[:1000], "more": max(len(rows) - 1000, 0), "tenant": tenant,
                                              "tenants": choices, "page": "schedules"})  # fmt: skip


async def _enqueued(redis: Any, export_date: str, entries: list[Any]) -> set[str]:
    ids = [import_job_id(e.tenant, e.module, export_date) for e in entries]
    flags = await redis.smismember(scheduler_imports(export_date), ids)
    return {i for i, flag in zip(ids, flags, strict=True) if flag}


def _schedule_row(
    schedule: Any, entry: Any, upcoming: list[Any], last: Any, done: set[str], paused: frozenset[str]
) -> dict[str, Any]:  # noqa: E501
    held = pauses.is_paused(paused, entry.tenant, entry.module)
    missed = last is not None and import_job_id(entry.tenant, entry.module, last.export_date) not in done
    return {
        "tenant": entry.tenant, "module": entry.module, "cron": schedule.cron, "timezone": schedule.timezone,
        "next_local": upcoming[0].local.strftime("%Y-%m-%d %H:%M") if upcoming else "-",
        "next_utc": _utc(upcoming[0].at) if upcoming else "-",
        "last_local": last.local.strftime("%Y-%m-%d %H:%M") if last else "-",
        "missed": missed, "paused": held,
        "tenant_paused": entry.tenant in paused, "module_paused": f"{entry.tenant}/{entry.module}" in paused,
    }  # fmt: skip


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


async def audit_page(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        entries = await queries.recent_audit(conn)
    return render(request, "audit.html", {"entries": entries, "page": "audit"})
