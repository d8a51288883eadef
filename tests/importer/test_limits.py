"""Limits across workers: imports per tenant, requests per provider, and how soon a dead worker's job comes back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from arq.worker import Worker
from redis.asyncio import Redis

from services.importer.limits import Busy, ProviderRate
from services.importer.worker import ARQ_MAX_TRIES
from tests.importer.conftest import Importer
from tests.importer.support import export_body
from tests.third_party import serve

USERS = export_body("users", "user_id,login\n1,ann\n")


@dataclass
class HeldExports:
    """Counts concurrent export requests per tenant; the first ``hold`` requests of ``held_tenant`` wait for ``go``."""

    held_tenant: str
    hold: int
    in_flight: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    arrivals: list[float] = field(default_factory=list)
    go: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    held: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        tenant = request.headers["X-Tenant-ID"]
        self.arrivals.append(time.monotonic())
        async with self.changed:
            self.in_flight[tenant] += 1
            self.peak[tenant] = max(self.peak[tenant], self.in_flight[tenant])
            self.changed.notify_all()
        try:
            if tenant == self.held_tenant and self.held < self.hold:
                self.held += 1
                await self.go.wait()
            return web.Response(body=USERS, content_type="application/json")
        finally:
            async with self.changed:
                self.in_flight[tenant] -= 1
                self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout=20)


@asynccontextmanager
async def held_exports(held_tenant: str, hold: int) -> AsyncIterator[tuple[HeldExports, str]]:
    fake = HeldExports(held_tenant, hold)
    app = web.Application()
    app.router.add_get("/exports/{module}", fake.handle)
    async with serve(app) as url:
        yield fake, url


async def wait_until(check: Callable[[], object], timeout: float = 20.0) -> None:
    """Poll state another component owns (Redis) until ``check`` holds."""
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_ten_workers_never_run_more_than_the_limit_for_one_tenant(importer: Importer) -> None:
    async with held_exports("acme", hold=2) as (fake, url):
        limited = importer.with_settings(proxy_url=url, importer_tenant_concurrency=2, importer_busy_defer=0.02)
        dates = [f"2024-05-{day:02d}" for day in range(1, 9)]
        for date in dates:
            await limited.enqueue("acme", "users", date)
        for date in dates[:3]:
            await limited.enqueue("globex", "users", date)
        workers = [limited.worker() for _ in range(10)]
        running = [asyncio.create_task(w.main()) for w in workers]
        try:
            # Two acme imports are in, held; other workers keep picking the remaining acme jobs up and are
            # turned away (each pick is counted in arq's retry key), while globex is not held back at all.
            await fake.wait_for(lambda: fake.in_flight["acme"] >= 2)
            await wait_until(lambda: _picks(importer, fake, "acme", dates, at_least=len(dates) + 20))
            await fake.wait_for(lambda: fake.peak["globex"] >= 1)
            assert fake.in_flight["acme"] == 2
            fake.go.set()
            await asyncio.wait_for(asyncio.gather(*running), timeout=30)
        finally:
            fake.go.set()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await _shutdown(workers)
    assert fake.peak["acme"] == 2
    runs = await importer.db.runs()
    assert (
        sorted((r["tenant_id"], r["status"]) for r in runs)
        == [("acme", "succeeded")] * 8 + [("globex", "succeeded")] * 3
    )
    assert _max_overlap([(r["started_at"], r["finished_at"]) for r in runs if r["tenant_id"] == "acme"]) <= 2


async def _picks(importer: Importer, fake: HeldExports, tenant: str, dates: list[str], at_least: int) -> bool:
    assert fake.peak[tenant] <= 2, f"{fake.peak[tenant]} imports of {tenant} ran at once"
    keys = [f"arq:retry:import:{tenant}:users:{date}" for date in dates]
    values = await importer.redis.mget(keys)
    return sum(int(v or 0) for v in values) >= at_least


def _max_overlap(intervals: list[tuple[object, object]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])  # type: ignore[type-var]
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


async def _shutdown(workers: list[Worker]) -> None:
    from services.importer.worker import shutdown

    for worker in workers:
        if "importer" in worker.ctx:
            await shutdown(worker.ctx)


async def test_a_dead_workers_slot_frees_itself_after_a_lease(importer: Importer) -> None:
    from services.importer.limits import TenantSlots

    slots = TenantSlots(importer.redis, limit=1, lease=2.0)
    assert await slots.try_acquire("acme", "dead-worker")
    assert not await slots.try_acquire("acme", "other")
    await importer.redis.pexpire("conduit:import:slots:acme", 10_000)  # the key outlives the lease
    await importer.redis.zadd("conduit:import:slots:acme", {"dead-worker": 0})  # as if its lease ran out
    assert await slots.try_acquire("acme", "other")


async def test_requests_to_one_provider_keep_to_its_rate(importer: Importer) -> None:
    async with held_exports("nobody", hold=0) as (fake, url):
        rated = importer.with_settings(proxy_url=url, importer_provider_rate=20.0, importer_provider_burst=1)
        for day in range(1, 7):
            await rated.enqueue("acme" if day % 2 else "globex", "users", f"2024-05-{day:02d}")
        workers = [rated.worker() for _ in range(3)]
        try:
            await asyncio.gather(*(w.main() for w in workers))
        finally:
            await _shutdown(workers)
    arrivals = sorted(fake.arrivals)
    assert len(arrivals) == 6
    # 20 per second with no burst: six requests take at least 5 intervals of 50 ms.
    assert arrivals[-1] - arrivals[0] >= 5 * 0.05 * 0.9
    # Each arrival lags its permit by however long the worker took to send it, so one gap can come out
    # short by that much (24 ms seen in CI); unlimited, the three workers' requests land together.
    assert min(b - a for a, b in zip(arrivals, arrivals[1:], strict=False)) >= 0.05 * 0.25


async def test_a_stuck_job_is_handed_on_after_the_import_timeout_plus_ten_seconds(importer: Importer) -> None:
    async with held_exports("acme", hold=1) as (fake, url):
        timed = importer.with_settings(proxy_url=url, importer_import_timeout=120.0, importer_refresh_timeout=60.0)
        await timed.enqueue("acme", "users")
        worker = timed.worker()
        task = asyncio.create_task(worker.main())
        try:
            await fake.wait_for(lambda: fake.in_flight["acme"] == 1)
            ttl = await importer.redis.pttl("arq:in-progress:import:acme:users:2024-05-01")
            fake.go.set()
            await asyncio.wait_for(task, timeout=20)
        finally:
            fake.go.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await _shutdown([worker])
    # arq keeps a job "in progress" for the longest job timeout + 10 s; a dead worker's job waits that long.
    assert 129_000 <= ttl <= 130_000
    assert worker.functions["import_export"].max_tries == ARQ_MAX_TRIES


async def test_a_rate_that_does_not_divide_a_second(redis: Redis) -> None:
    # 3 per second is an interval of 333.33 ms: the key's expiry must still be whole milliseconds.
    rate = ProviderRate(redis, rate=3.0, burst=1, overrides={})
    assert await rate.wait("demo", max_wait=5.0) == 0.0
    with pytest.raises(Busy):
        await rate.wait("demo", max_wait=0.0)
