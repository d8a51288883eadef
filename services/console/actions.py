"""The admin part: each action is a GET that says what it will do (how many runs) and a POST that does it.

Every POST carries the session's CSRF token (checked in ``auth``), needs the
admin role, and is written to ``console_audit`` (who, when, what, outcome).
Re-runs go through ``shared.reruns``, the code ``conduit imports rerun`` runs.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from aiohttp import web
from arq.constants import in_progress_key_prefix, job_key_prefix

from services.console import keys, queries
from services.console.auth import require_admin, user
from services.console.filters import BadFilter
from services.console.pages import render
from shared import events, pauses, reruns
from shared.import_runs import RunKey, mark_cancelled
from shared.jobs import REFRESH_TOKEN
from shared.modules import catalogue

# Take a job off arq's queue only while no worker has started it (then it is no longer "queued").
_CANCEL = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then redis.call('DEL', KEYS[2]) end
return removed
"""


async def _fields(request: web.Request) -> dict[str, str]:
    source = await request.post() if request.method == "POST" else request.query
    max_chars = request.app[keys.SETTINGS].console_filter_max_chars
    found: dict[str, str] = {}
    for name in ("tenant", "module", "provider", "job_id", "from", "to"):
        value = source.get(name)
        if isinstance(value, str) and value.strip():
            if len(value) > max_chars:
                raise web.HTTPBadRequest(text=f"{name} is longer than {max_chars} characters")
            found[name] = value.strip()
    return found


def _confirm(request: web.Request, title: str, lines: list[str], fields: dict[str, Any], count: int) -> web.Response:
    return render(request, "confirm.html", {"title": title, "lines": lines, "fields": fields, "count": count,
                                            "action": request.path, "page": "actions"})  # fmt: skip


async def _record(request: web.Request, action: str, target: str, outcome: dict[str, Any]) -> None:
    who = user(request)
    async with request.app[keys.POOL].acquire() as conn:
        await queries.audit(conn, who.name, who.role, action, target, outcome)


def _done(request: web.Request, title: str, lines: list[str], links: list[tuple[str, str]]) -> web.Response:
    return render(request, "done.html", {"title": title, "lines": lines, "links": links, "page": "actions"})


# --- re-run one run -------------------------------------------------------------------------------------------


async def rerun_one(request: web.Request) -> web.Response:
    raw = request.match_info["run_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound(text=f"no import run {raw[:40]!r}")
    async with request.app[keys.POOL].acquire() as conn:
        run = await conn.fetchrow("SELECT tenant_id, module, export_date FROM import_runs WHERE id = $1", int(raw))
        if run is None:
            return render(request, "not_found.html", {"what": f"import run {raw}", "page": "imports"}, status=404)
        key = RunKey(run["tenant_id"], run["module"], run["export_date"])
        if request.method != "POST":  # GET and HEAD only ever confirm
            what = f"{key.tenant} / {key.module} / {key.export_date}"
            return _confirm(request, "Re-run this import", [f"1 run: {what}"], {}, 1)
        require_admin(request)
        outcome = await reruns.rerun(request.app[keys.REDIS], conn, [key])
    await _record(request, "rerun", f"run {raw}", {"lines": outcome.lines, "enqueued": outcome.enqueued})
    links = [(f"/runs/{i}", f"run {i}") for i in outcome.run_ids] + [(f"/runs/{raw}", f"back to run {raw}")]
    return _done(request, f"Re-run: {outcome.enqueued} enqueued, {outcome.skipped} skipped", outcome.lines, links)


# --- re-run the failed ones of a filter ---------------------------------------------------------------------------


def _failed_filter(fields: dict[str, str]) -> reruns.FailedFilter:
    try:
        return reruns.FailedFilter(
            tenant=fields.get("tenant"),
            module=fields.get("module"),
            date_from=dt.date.fromisoformat(fields["from"]) if "from" in fields else None,
            date_to=dt.date.fromisoformat(fields["to"]) if "to" in fields else None,
        )
    except ValueError as exc:
        raise BadFilter(f"dates are YYYY-MM-DD: {exc}") from None


async def rerun_failed(request: web.Request) -> web.Response:
    fields = await _fields(request)
    try:
        where = _failed_filter(fields)
    except BadFilter as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    async with request.app[keys.POOL].acquire() as conn:
        runs = await reruns.failed_latest(conn, where)
        if request.method != "POST":  # GET and HEAD only ever confirm
            scope = ", ".join(f"{k} {v}" for k, v in fields.items()) or "every tenant, module and date"
            lines = [f"{len(runs)} failed imports ({scope}) will be enqueued again"]
            lines += [f"{k.tenant} / {k.module} / {k.export_date}" for k in runs[:20]]
            return _confirm(request, "Re-run the failed imports", lines, fields, len(runs))
        require_admin(request)
        outcome = await reruns.rerun(request.app[keys.REDIS], conn, runs)
    await _record(request, "rerun_failed", str(fields), {"lines": outcome.lines[:200], "enqueued": outcome.enqueued})
    title = f"Re-run failed: {outcome.enqueued} enqueued, {outcome.skipped} skipped"
    return _done(request, title, outcome.lines[:200], [("/imports?status=queued", "queued runs")])


# --- cancel a queued job -------------------------------------------------------------------------------------------


async def cancel_job(request: web.Request) -> web.Response:
    fields = await _fields(request)
    job_id = fields.get("job_id")
    if not job_id:
        raise web.HTTPBadRequest(text="job_id is required")
    redis = request.app[keys.REDIS]
    if request.method != "POST":  # GET and HEAD only ever confirm
        queued = await redis.zscore(redis.default_queue_name, job_id) is not None
        lines = [f"job {job_id}" + ("" if queued else " (not in the queue now)")]
        return _confirm(request, "Cancel a queued job", lines, {"job_id": job_id}, int(queued))
    who = require_admin(request)
    queue_keys = (redis.default_queue_name, job_key_prefix + job_id, in_progress_key_prefix + job_id)
    removed = await redis.eval(_CANCEL, 3, *queue_keys, job_id)  # type: ignore[misc]
    rows = 0
    if removed == 1:
        async with request.app[keys.POOL].acquire() as conn:
            rows = await mark_cancelled(conn, job_id, who.name)
        parts = job_id.split(":")
        if len(parts) >= 4:
            events.emit(redis, "job", "cancelled", job_id=job_id, tenant=parts[1], module=parts[2])
    said = {1: "cancelled", 0: "not in the queue (already started, done or gone)", -1: "already running"}
    line = f"job {job_id}: {said.get(int(removed), 'unknown')}"
    await _record(request, "cancel_job", job_id, {"removed": int(removed), "ledger_rows": rows})
    return _done(request, "Cancel", [line], [("/", "live board")])


# --- pause and resume schedules ------------------------------------------------------------------------------------


async def pause_or_resume(request: web.Request) -> web.Response:
    pausing = request.path.endswith("/pause")
    fields = await _fields(request)
    tenant, module = fields.get("tenant"), fields.get("module")
    tenants = request.app[keys.TENANTS]
    if tenant is None or tenant not in tenants.tenants:
        raise web.HTTPBadRequest(text=f"unknown tenant {(tenant or '')[:80]!r}")
    if module is not None and module not in catalogue():
        raise web.HTTPBadRequest(text=f"unknown module {module[:80]!r}")
    verb = "Pause" if pausing else "Resume"
    what = f"{tenant}/{module}" if module else f"{tenant} (all its modules)"
    if request.method != "POST":  # GET and HEAD only ever confirm
        count = 1 if module else len(catalogue().names())
        lines = [f"{verb} the daily imports of {what}: up to {count} imports a day"]
        return _confirm(request, f"{verb} a schedule", lines, fields, count)
    require_admin(request)
    redis = request.app[keys.REDIS]
    changed = await (pauses.pause if pausing else pauses.resume)(redis, tenant, module)
    await _record(request, "pause" if pausing else "resume", what, {"changed": changed})
    state = ("paused" if pausing else "resumed") if changed else ("was already paused" if pausing else "was not paused")
    return _done(request, verb, [f"{what}: {state}"], [(f"/schedules?tenant={tenant}", "schedules")])


# --- force a token refresh -----------------------------------------------------------------------------------------


async def refresh_token(request: web.Request) -> web.Response:
    fields = await _fields(request)
    tenant, provider = fields.get("tenant", ""), fields.get("provider", "")
    if not request.app[keys.TENANTS].has(tenant, provider):
        raise web.HTTPBadRequest(text=f"unknown tenant and provider {tenant[:80]!r}/{provider[:80]!r}")
    if request.method != "POST":  # GET and HEAD only ever confirm
        lines = [f"Refresh the token of {tenant}/{provider} now (an importer runs it)"]
        return _confirm(request, "Force a token refresh", lines, fields, 1)
    require_admin(request)
    redis = request.app[keys.REDIS]
    job_id = f"refresh:{tenant}:{provider}:operator:{time.time_ns() // 1000}"
    job = await redis.enqueue_job(REFRESH_TOKEN, tenant, provider, True, _job_id=job_id)
    await _record(request, "refresh_token", f"{tenant}/{provider}", {"job_id": job_id, "enqueued": job is not None})
    return _done(
        request, "Token refresh", [f"enqueued job {job_id}" if job else "not enqueued"], [("/tokens", "tokens")]
    )
