"""The console's aiohttp app: ``create_app(settings=None)``; ``conduit console`` serves it (main.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from redis.exceptions import RedisError

from services.console import actions, auth, keys, pages
from services.console.board import Board, listener, pusher
from services.console.oidc import Oidc
from services.console.sessions import Sessions
from services.console.settings import ConsoleSettings
from services.console.templating import FILTERS
from shared.crypto import BoundSealer, Sealer
from shared.db import UNAVAILABLE, create_pool_with_retry
from shared.job_json import JsonArqRedis
from shared.ops_http import add_ops_routes
from shared.tenants import load_tenants
from shared.token_store import TokenStore

HERE = Path(__file__).resolve().parent
# Scripts and styles only from this origin (the pinned htmx files in static/), nothing inline, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


async def security_headers(_: web.Request, response: web.StreamResponse) -> None:
    """On every response as its head goes out: streamed ones (the board's SSE, the rejects CSV) and errors too.

    A middleware sees a streamed response only after its head has been sent, too late to add anything.
    """
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")


def create_app(settings: ConsoleSettings | None = None) -> web.Application:
    """The console: pages, actions, the live board's stream, and /health_check, /ready, /metrics."""
    settings = settings or ConsoleSettings()
    app = web.Application(middlewares=[auth.require_session], client_max_size=64 * 1024)
    app.on_response_prepare.append(security_headers)
    app[keys.SETTINGS] = settings
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters.update(FILTERS)
    app.cleanup_ctx.append(lifecycle)
    _routes(app)
    add_ops_routes(app, lambda: ready(app))
    return app


def _routes(app: web.Application) -> None:
    r = app.router
    r.add_static("/static/", HERE / "static", append_version=False)
    r.add_get("/favicon.ico", _no_icon)
    r.add_get("/login", auth.login_page)
    r.add_post("/login", auth.login)
    r.add_get("/login/oidc", auth.oidc_start)
    r.add_get("/login/callback", auth.oidc_callback)
    r.add_post("/logout", auth.logout)
    r.add_get("/", pages.board_page)
    r.add_get("/board/stream", pages.board_stream)
    r.add_get("/imports", pages.imports_page)
    r.add_get("/runs/{run_id}", pages.run_page)
    r.add_get("/runs/{run_id}/rejects.csv", pages.run_rejects_csv)
    r.add_get("/tokens", pages.tokens_page)
    r.add_get("/schedules", pages.schedules_page)
    r.add_get("/audit", pages.audit_page)
    for path, handler in (
        ("/runs/{run_id}/rerun", actions.rerun_one),
        ("/imports/rerun-failed", actions.rerun_failed),
        ("/jobs/cancel", actions.cancel_job),
        ("/schedules/pause", actions.pause_or_resume),
        ("/schedules/resume", actions.pause_or_resume),
        ("/tokens/refresh", actions.refresh_token),
    ):
        r.add_get(path, handler)
        r.add_post(path, handler)


async def _no_icon(_: web.Request) -> web.Response:
    """Browsers ask for it on every page; no icon, and no 401/404 in their consoles."""
    return web.Response(status=204)


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Redis, PostgreSQL, the tenants file, the token store (read-only use) and the board's two tasks."""
    settings = app[keys.SETTINGS]
    # Sessions are sealed under a key derived from the token key (sessions.py); a bad key stops the start here.
    sealer = BoundSealer("console session", settings.token_key, settings.token_key_old)
    redis = JsonArqRedis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout,
        socket_keepalive=True,
        health_check_interval=10,
    )
    pool = await create_pool_with_retry(
        settings.database_url,
        settings.database_connect_wait,
        min_size=1,
        max_size=8,
        application_name="conduit-console",
        # Plan each page's query for its own filter values: a generic plan of the imports query (asyncpg
        # prepares statements) picked the date index for a module + date filter, 62 ms instead of 1 ms.
        server_settings={"plan_cache_mode": "force_custom_plan"},
    )
    tenants = load_tenants(settings.tenants_file, resolve_secrets=False)
    app[keys.REDIS], app[keys.POOL], app[keys.TENANTS] = redis, pool, tenants
    app[keys.SESSIONS] = Sessions(redis, settings.console_session_ttl, sealer)
    oidc_sealer = BoundSealer("console oidc sign-in", settings.token_key, settings.token_key_old)
    app[keys.OIDC] = Oidc(settings, redis, oidc_sealer) if settings.oidc_enabled else None
    app[keys.TOKENS] = (
        TokenStore(redis, Sealer(settings.token_key, settings.token_key_old)) if settings.token_key else None
    )
    board = app[keys.BOARD] = Board()
    template = aiohttp_jinja2.get_env(app).get_template("_board.html")
    tasks = [
        asyncio.create_task(listener(board, pool, redis), name="console-events"),
        asyncio.create_task(pusher(board, lambda view: template.render(board=view), settings.console_push_interval)),
    ]
    try:
        yield
    finally:
        board.broadcast(None)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pool.close()
        await redis.aclose()


async def ready(app: web.Application) -> dict[str, str]:
    checks = {"redis": "ok", "database": "ok", "events": "ok" if app[keys.BOARD].connected else "not following"}
    try:
        async with asyncio.timeout(2):
            await app[keys.REDIS].ping()
    except (RedisError, OSError, TimeoutError) as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    try:
        async with asyncio.timeout(2):
            await app[keys.POOL].fetchval("SELECT 1")
    except UNAVAILABLE as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    return checks
