"""Pausing a tenant's or a module's schedule (the console's action): nothing enqueued while paused, caught up after."""

from __future__ import annotations

from collections.abc import Callable

from arq.connections import ArqRedis

from services.scheduler.main import Scheduler
from shared import pauses
from shared.tenants import TenantsConfig
from tests.scheduler.support import MODULES, jobs, utc


async def test_a_paused_tenant_and_module_are_held_and_enqueued_once_resumed(
    write_tenants: Callable[..., TenantsConfig], make_scheduler: Callable[..., Scheduler], arq_redis: ArqRedis
) -> None:
    scheduler = make_scheduler(write_tenants({"acme": None, "globex": None}))
    await pauses.pause(arq_redis, "acme")
    await pauses.pause(arq_redis, "globex", MODULES[0])
    assert await scheduler.imports.tick(utc(2026, 5, 1, 2, 0, 1)) == len(MODULES) - 1
    queued = {(j.args[0], j.args[1]) for j in await jobs(arq_redis, "import_export")}
    assert queued == {("globex", m) for m in MODULES[1:]}
    # Still paused: the next tick looks again and enqueues nothing.
    assert await scheduler.imports.tick(utc(2026, 5, 1, 2, 0, 2)) == 0
    await pauses.resume(arq_redis, "acme")
    await pauses.resume(arq_redis, "globex", MODULES[0])
    assert await scheduler.imports.tick(utc(2026, 5, 1, 2, 5)) == len(MODULES) + 1
    assert await scheduler.imports.tick(utc(2026, 5, 1, 2, 6)) == 0
    assert len(await jobs(arq_redis, "import_export")) == 2 * len(MODULES)
