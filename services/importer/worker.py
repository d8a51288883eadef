"""The arq worker: ``arq services.importer.worker.WorkerSettings`` or ``conduit worker``.

Per-process resources are made once in ``startup`` and kept in arq's ``ctx``;
the worker reuses arq's own Redis connection (``ctx["redis"]``) for the token store.
"""

from __future__ import annotations

import socket
from typing import Any

from arq.connections import RedisSettings
from arq.worker import func
from redis.exceptions import RedisError

from services.importer.settings import ImporterSettings
from services.importer.token_jobs import refresh_token
from shared.crypto import Sealer
from shared.jobs import REFRESH_TOKEN
from shared.logging import configure_logging, get_logger
from shared.ops_http import start_ops_server
from shared.refresh import Refresher
from shared.tenants import load_tenants
from shared.token_store import TokenStore

log = get_logger(__name__)
_settings = ImporterSettings()


async def startup(ctx: dict[str, Any]) -> None:
    """Build the token store and refresher, and serve /health_check, /ready and /metrics."""
    settings: ImporterSettings = ctx.setdefault("settings", _settings)
    if not ctx.get("logging_configured"):
        configure_logging(settings.log_level, settings.log_json)
    tenants = ctx.get("tenants") or load_tenants(settings.tenants_file)
    store = TokenStore(ctx["redis"], Sealer(settings.token_key, settings.token_key_old))
    ctx["refresher"] = Refresher(store, tenants, settings.refresh_policy())

    async def ready() -> dict[str, str]:
        try:
            await ctx["redis"].ping()
        except (RedisError, OSError) as exc:
            return {"redis": f"unreachable: {type(exc).__name__}"}
        return {"redis": "ok"}

    if settings.worker_http_port:
        ctx["ops"] = await start_ops_server(settings.worker_http_host, settings.worker_http_port, ready)
    log.info("worker started", tenants=len(tenants.tenants))


async def shutdown(ctx: dict[str, Any]) -> None:
    ops = ctx.get("ops")
    if ops is not None:
        await ops.cleanup()
    log.info("worker stopped")


def functions(settings: ImporterSettings) -> list[Any]:
    """The job functions, with per-kind timeouts so a stuck job is cancelled and retried."""
    return [
        func(refresh_token, name=REFRESH_TOKEN, timeout=settings.worker_refresh_timeout, keep_result=60, max_tries=1),
    ]


class WorkerSettings:
    """What the arq CLI reads; everything comes from ``ImporterSettings`` (the environment)."""

    functions = functions(_settings)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(_settings.redis_url)
    poll_delay = _settings.worker_poll_delay
    max_jobs = _settings.worker_max_jobs
    # Startup must not fail just because Redis is slow to come up in a fresh cluster.
    redis_settings.conn_retries = 30
    # `arq --check` (the liveness probe) reads this key: one per host so replicas are told apart,
    # refreshed often enough that a hung worker is noticed within a minute.
    health_check_key = f"arq:health-check:{socket.gethostname()}"
    health_check_interval = 20
