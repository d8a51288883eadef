"""The scheduler process: ``conduit scheduler``. It owns time; workers do the work."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.exceptions import RedisError

from services.scheduler.settings import SchedulerSettings
from services.scheduler.token_refresh import enqueue_refreshes, plan_refreshes
from shared.logging import configure_logging, get_logger
from shared.ops_http import start_ops_server
from shared.redis_client import safe_url
from shared.tenants import ConfigError, TenantsConfig, load_tenants

log = get_logger(__name__)


class Scheduler:
    """One loop: every tick, enqueue what is due. Safe to run as several replicas."""

    def __init__(self, settings: SchedulerSettings, tenants: TenantsConfig, redis: ArqRedis) -> None:
        self.settings = settings
        self.tenants = tenants
        self.redis = redis
        self.healthy = False

    async def tick(self, now: float) -> int:
        planned = await plan_refreshes(self.redis, self.tenants, now, self.settings.scheduler_refresh_lookahead)
        return await enqueue_refreshes(self.redis, planned)

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.settings.scheduler_tick
        while not stop.is_set():
            try:
                await self.tick(time.time())
                self.healthy, delay = True, self.settings.scheduler_tick
            except (RedisError, OSError) as exc:
                self.healthy = False
                log.error("redis unavailable; will retry", error=type(exc).__name__, retry_in=delay)
                delay = min(delay * 2, 10.0)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass


async def serve(settings: SchedulerSettings) -> None:
    tenants = load_tenants(settings.tenants_file, resolve_secrets=False)
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    redis_settings.conn_retries = 30
    redis = await create_pool(redis_settings)
    scheduler = Scheduler(settings, tenants, redis)

    async def ready() -> dict[str, str]:
        return {"redis": "ok" if scheduler.healthy else "unreachable"}

    ops = await start_ops_server(settings.scheduler_http_host, settings.scheduler_http_port, ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("scheduler started", redis_url=safe_url(settings.redis_url), pairs=len(list(tenants.pairs())))
    try:
        await scheduler.run(stop)
    finally:
        await ops.cleanup()
        await redis.aclose()
        log.info("scheduler stopped")


def main(settings: SchedulerSettings | None = None) -> None:
    settings = settings or SchedulerSettings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:
        print(f"conduit scheduler: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
