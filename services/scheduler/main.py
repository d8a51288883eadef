"""The scheduler process: ``conduit scheduler``. It owns time; the importers do the work."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from services.scheduler.daily_imports import DailyImports
from services.scheduler.metrics import LAST_TICK, REDIS_UP
from services.scheduler.settings import SchedulerSettings
from services.scheduler.token_refresh import RecentRefreshes, enqueue_refreshes, plan_refreshes
from shared import stops
from shared.job_json import JsonArqRedis
from shared.logging import configure_logging, get_logger
from shared.modules import catalogue
from shared.ops_http import start_ops_server
from shared.redis_connect import connect as connect_redis
from shared.schedules import import_entries
from shared.tenants import ConfigError, TenantsConfig, load_tenants
from shared.urls import redact_url

log = get_logger(__name__)


class Scheduler:
    """One loop: every tick, enqueue what is due. Safe to run as several replicas.

    ``modules`` are the names of the catalogue's modules; every tenant imports
    each of them daily unless its ``imports`` section says otherwise.
    """

    def __init__(
        self, settings: SchedulerSettings, tenants: TenantsConfig, redis: ArqRedis, modules: Sequence[str] = ()
    ) -> None:
        self.settings = settings
        self.tenants = tenants
        self.redis = redis
        self.imports = DailyImports(
            redis, import_entries(tenants, modules), settings.scheduler_catch_up, settings.scheduler_late_after
        )
        self.recent_refreshes = RecentRefreshes()
        self.healthy = False

    async def tick(self, now: float) -> int:
        """Enqueue the refreshes and imports due at ``now``; returns how many jobs were added."""
        planned = await plan_refreshes(self.redis, self.tenants, now, self.settings.scheduler_refresh_lookahead)
        planned = self.recent_refreshes.fresh(planned, now)
        refreshes = await enqueue_refreshes(self.redis, planned, now)
        self.recent_refreshes.remember(planned, now)
        return refreshes + await self.imports.tick(now)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set. While Redis is down, retry with a growing pause and say so once."""
        delay = self.settings.scheduler_tick
        while not stop.is_set():
            try:
                await self.tick(time.time())
                self._reachable()
                delay = self.settings.scheduler_tick
            except (RedisError, OSError) as exc:
                self._unreachable(exc, delay)
                delay = min(delay * 2, self.settings.scheduler_retry_max)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    def _reachable(self) -> None:
        if not self.healthy:
            log.info("redis reachable; scheduling", redis_url=redact_url(self.settings.redis_url))
        self.healthy = True
        REDIS_UP.set(1)
        LAST_TICK.set_to_current_time()

    def _unreachable(self, exc: BaseException, delay: float) -> None:
        # Nothing is lost by waiting: fires stay due for the catch-up window and the ledger
        # keeps whatever reached Redis, so the next successful tick enqueues each job once.
        level = log.error if self.healthy else log.warning
        level("redis unavailable; nothing enqueued, will retry", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
        self.healthy = False
        REDIS_UP.set(0)


def catalogue_modules() -> list[str]:
    """The names of the importer's module catalogue; only the names, the scheduler needs nothing else."""
    return catalogue().names()


def connect(settings: SchedulerSettings) -> ArqRedis:
    """An arq client with bounded waits and no ping: an unreachable Redis shows in the loop, not at start."""
    redis: ArqRedis = connect_redis(
        settings.redis_url,
        settings.redis_location(),
        JsonArqRedis,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        health_check_interval=30,
    )
    return redis


async def serve(settings: SchedulerSettings) -> None:
    stop = asyncio.Event()
    stops.take(asyncio.get_running_loop(), stop.set)  # first: a stop while it starts ends it as cleanly
    tenants = load_tenants(settings.tenants_file, resolve_secrets=False)
    modules = catalogue_modules()
    redis = connect(settings)
    scheduler = Scheduler(settings, tenants, redis, modules)

    async def ready() -> dict[str, str]:
        return {"redis": "ok" if scheduler.healthy else "unreachable"}

    ops = await start_ops_server(settings.scheduler_http_host, settings.scheduler_http_port, ready)
    log.info(
        "scheduler started",
        redis_url=redact_url(settings.redis_url),
        pairs=len(list(tenants.pairs())),
        imports=sum(len(entries) for entries in scheduler.imports.groups.values()),
        schedules=len(scheduler.imports.groups),
    )
    try:
        await scheduler.run(stop)
    finally:
        await ops.cleanup()
        await redis.aclose()
        log.info("scheduler stopped")


def main(settings: SchedulerSettings | None = None) -> None:
    stops.hold()  # until serve() handles them (shared/stops.py)
    settings = settings or SchedulerSettings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:
        print(f"conduit scheduler: {exc}", file=sys.stderr)
        raise SystemExit(1) from None  # docs/operations.md, "Exit codes": 1 for configuration errors
