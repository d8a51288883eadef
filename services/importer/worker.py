"""The importer process: an arq worker run by ``conduit importer`` (:func:`run`), which lives through Redis
outages, or, without that, by ``arq services.importer.worker.WorkerSettings``. It runs the import jobs and
the token refresh jobs the scheduler enqueues.

Per-process resources are made once in ``startup`` and kept in arq's ``ctx``:
the token refresher (on arq's own Redis connection), and for imports a
PostgreSQL pool, an HTTP session to the auth proxy and the limits shared by every importer.
Startup fails, naming the module and column, when the database does not match
the module definitions: better an importer that does not start than one that
imports into the wrong columns.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from arq.worker import func, get_kwargs
from redis.exceptions import RedisError

from services.importer.import_job import Importer, import_export
from services.importer.limits import ProviderRate, TenantSlots
from services.importer.outage_worker import OutageTolerantWorker
from services.importer.schema import check_schema
from services.importer.settings import ImporterSettings, deprecated_names
from services.importer.token_jobs import REFRESH_MAX_TRIES, refresh_token
from shared import stops
from shared.crypto import Sealer
from shared.db import UNAVAILABLE, create_pool_with_retry
from shared.job_json import dumps, loads
from shared.jobs import IMPORT_EXPORT, REFRESH_TOKEN
from shared.logging import configure_logging, get_logger
from shared.modules import catalogue
from shared.ops_http import ReadyCheck, start_ops_server
from shared.redis_connect import arq_settings
from shared.refresh import Refresher
from shared.tenants import load_tenants
from shared.token_store import TokenStore

log = get_logger(__name__)
_settings = ImporterSettings()
# arq's own cap on tries; the importer keeps its real budget (IMPORTER_MAX_ATTEMPTS) in the ledger,
# because waiting for a tenant slot also goes through Retry and must not use attempts up.
ARQ_MAX_TRIES = 1000


async def serve_ops(ctx: dict[str, Any]) -> None:
    """Serve /health_check, /ready and /metrics from the start, before Redis answers (``conduit importer``)."""
    settings: ImporterSettings = ctx.setdefault("settings", _settings)
    if not ctx.get("logging_configured"):
        configure_logging(settings.log_level, settings.log_json)
        ctx["logging_configured"] = True
        _warn_old_names(ctx.get("command"))
    if settings.importer_http_port and "ops" not in ctx:
        ctx["ops"] = await start_ops_server(settings.importer_http_host, settings.importer_http_port, _ready(ctx))


def _warn_old_names(command: str | None) -> None:
    """The importer was the worker: say which old names this process was started with, and their new ones."""
    if command == "worker":
        log.warning("deprecated command", command="conduit worker", use="conduit importer")
    for name in deprecated_names():
        log.warning("deprecated setting", setting=name, use=name.replace("CONDUIT_WORKER_", "CONDUIT_IMPORTER_"))


async def startup(ctx: dict[str, Any]) -> None:
    """Build the token refresher and the importer, check the schema, and serve /health_check, /ready, /metrics."""
    await serve_ops(ctx)
    settings: ImporterSettings = ctx["settings"]
    tenants = ctx.get("tenants") or load_tenants(settings.tenants_file)
    store = TokenStore(ctx["redis"], Sealer(settings.token_key, settings.token_key_old))
    ctx["refresher"] = Refresher(store, tenants, settings.refresh_policy())
    ctx["importer"] = await _importer(ctx, settings, tenants)
    log.info("importer started", tenants=len(tenants.tenants), modules=len(ctx["importer"].modules))


def _ready(ctx: dict[str, Any]) -> ReadyCheck:
    """Redis and PostgreSQL answer; before the importer has connected to them, it is not ready."""

    async def ready() -> dict[str, str]:
        checks = {"redis": "ok", "database": "ok"}
        redis, importer = ctx.get("redis"), ctx.get("importer")
        try:
            # arq's client has no read timeout: a Redis that stopped answering would hang /ready.
            async with asyncio.timeout(2):
                if redis is None:
                    checks["redis"] = "not connected yet"
                else:
                    await redis.ping()
        except (RedisError, OSError) as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
        try:
            async with asyncio.timeout(2):
                if importer is None:
                    checks["database"] = "not connected yet"
                else:
                    await importer.pool.fetchval("SELECT 1")
        except UNAVAILABLE as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        return checks

    return ready


async def _importer(ctx: dict[str, Any], settings: ImporterSettings, tenants: Any) -> Importer:
    modules = ctx.get("modules") or catalogue()
    pool = await create_pool_with_retry(
        settings.database_url,
        settings.database_connect_wait,
        min_size=1,
        # Every running import holds a connection; the ledger and /ready need one more now and then.
        max_size=max(settings.importer_db_pool_size, settings.importer_max_jobs + 2),
        application_name="conduit-importer",
    )
    try:
        async with pool.acquire() as conn:
            await check_schema(conn, modules)
    except BaseException:
        await pool.close()
        raise
    timeout = aiohttp.ClientTimeout(
        sock_connect=settings.importer_fetch_connect_timeout, sock_read=settings.importer_fetch_read_timeout
    )
    redis = ctx["redis"]
    return Importer(
        settings=settings,
        pool=pool,
        session=aiohttp.ClientSession(timeout=timeout, auto_decompress=True),
        redis=redis,
        modules=modules,
        tenants=tenants,
        slots=TenantSlots(redis, settings.importer_tenant_concurrency, settings.importer_slot_lease),
        rate=ProviderRate(
            redis, settings.importer_provider_rate, settings.importer_provider_burst, settings.importer_provider_rates
        ),
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    ops = ctx.pop("ops", None)
    if ops is not None:
        await ops.cleanup()
    importer: Importer | None = ctx.get("importer")
    if importer is not None:
        await importer.session.close()
        await importer.pool.close()
    log.info("importer stopped")


def functions(settings: ImporterSettings) -> list[Any]:
    """The job functions, with per-kind timeouts so a stuck job is cancelled and retried.

    arq hands a job whose importer died to another one once its in-progress key
    expires: the longest of these timeouts + 10 s after the job started.
    """
    return [
        func(
            refresh_token,
            name=REFRESH_TOKEN,
            timeout=settings.importer_refresh_timeout,
            keep_result=60,
            max_tries=REFRESH_MAX_TRIES,
        ),
        func(
            import_export,
            name=IMPORT_EXPORT,
            timeout=settings.importer_import_timeout,
            keep_result=settings.importer_import_keep_result,
            max_tries=ARQ_MAX_TRIES,
        ),
    ]


class WorkerSettings:
    """What the arq CLI reads; everything comes from ``ImporterSettings`` (the environment)."""

    functions = functions(_settings)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = arq_settings(_settings.redis_url, _settings.redis_location())
    poll_delay = _settings.importer_poll_delay
    max_jobs = _settings.importer_max_jobs
    # JSON, never arq's default pickle (shared/job_json.py).
    job_serializer = dumps
    job_deserializer = loads
    # Startup must not fail just because Redis is slow to come up in a fresh cluster.
    redis_settings.conn_retries = 30
    # `arq --check` (the liveness probe) reads this key: one per host so replicas are told apart,
    # refreshed often enough that a hung importer is noticed within a minute.
    health_check_key = f"arq:health-check:{socket.gethostname()}"
    health_check_interval = 20


def run(command: str = "importer") -> None:
    """Run the importer until SIGTERM or SIGINT (``conduit importer``; ``command`` is the name it was started by)."""
    stops.hold()  # until arq's Worker has its handlers, made in its constructor (shared/stops.py)
    kwargs = get_kwargs(WorkerSettings)  # type: ignore[arg-type]
    worker = OutageTolerantWorker(before_connect=serve_ops, ctx={"command": command}, **kwargs)
    stops.release()
    worker.run()
