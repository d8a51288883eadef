"""Exactly once against one real Redis: three schedulers, simulated days, restarts, catch-up, foreign enqueues."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from arq.jobs import JobDef
from prometheus_client import REGISTRY

from services.scheduler.enqueue import ledger_key
from services.scheduler.main import Scheduler
from shared import redis_keys
from shared.jobs import IMPORT_EXPORT, REFRESH_TOKEN, import_job_id
from shared.schedules import Schedule
from shared.tenants import TenantsConfig
from tests.scheduler.support import MODULES, SimulatedWorkers, jobs, utc

Write = Callable[..., TenantsConfig]
MakeScheduler = Callable[..., Scheduler]

ZONES = {"london": "Europe/London", "shanghai": "Asia/Shanghai", "newyork": "America/New_York"}
TOKEN_LIFE = 6 * 3600.0


def _tenants(write: Write) -> TenantsConfig:
    return write({name: {"schedule": {"timezone": zone}} for name, zone in ZONES.items()}, imports={"spread": "20m"})


async def test_three_schedulers_through_five_days_enqueue_each_import_and_refresh_once(
    write_tenants: Write, make_scheduler: MakeScheduler, arq_redis: ArqRedis
) -> None:
    tenants = _tenants(write_tenants)
    schedulers = [make_scheduler(tenants) for _ in range(3)]
    workers = SimulatedWorkers(arq_redis)
    start, step = utc(2026, 5, 1), 7 * 60.0  # 7 minutes: ticks never line up with the hour

    async def refreshed(job: JobDef) -> None:
        # What a refresh does to the schedule: the pair is due again at half its new token's life.
        if job.function == REFRESH_TOKEN:
            member = redis_keys.pair_member(*job.args)
            await arq_redis.zadd(redis_keys.TOKENS_DUE, {member: now + TOKEN_LIFE / 2})

    now, ticks = start, 0
    while now < start + 5 * 86400:
        # All three tick at the same simulated moment, interleaving on the one Redis.
        await asyncio.gather(*(s.tick(now) for s in schedulers))
        await workers.run_due(now, refreshed)
        now, ticks = now + step, ticks + 1
        if ticks % 37 == 0:  # every ~4 hours one replica restarts and forgets all it did
            schedulers[ticks // 37 % 3] = make_scheduler(tenants)
    await workers.run_due(now + 86400)

    imports = Counter(j.job_id for j in workers.ran if j.function == IMPORT_EXPORT)
    assert imports and max(imports.values()) == 1
    # The first tick catches up the fires of the last 24 hours; the last tick is just before 6 May 00:00 UTC.
    # London fires at 01:00 UTC (BST), New York at 06:00 UTC (EDT): exports 29 April to 4 May.
    # Shanghai fires at 18:00 UTC the day before: exports 30 April to 5 May.
    days = {"london": range(29, 35), "newyork": range(29, 35), "shanghai": range(30, 36)}
    expected = {import_job_id(t, m, _day(d)) for t in ZONES for m in MODULES for d in days[t]}
    assert set(imports) == expected
    refreshes = Counter(j.job_id for j in workers.ran if j.function == REFRESH_TOKEN)
    assert max(refreshes.values()) == 1
    # One at start (never refreshed), then one every 3 hours (plus up to a tick) over 5 days, for each pair.
    per_pair = Counter(tuple(j.args) for j in workers.ran if j.function == REFRESH_TOKEN)
    assert set(per_pair) == {(t, "demo") for t in ZONES}
    assert all(37 <= n <= 41 for n in per_pair.values()), per_pair


async def test_every_import_runs_once_per_day_in_the_tenants_own_zone(
    write_tenants: Write, make_scheduler: MakeScheduler, arq_redis: ArqRedis
) -> None:
    scheduler = make_scheduler(_tenants(write_tenants))
    workers = SimulatedWorkers(arq_redis)
    now = utc(2026, 5, 1, 12)
    while now < utc(2026, 5, 3, 12):
        await scheduler.imports.tick(now)
        await workers.run_due(now)
        now += 300
    fired = {(j.args[0], j.args[2]): j.enqueue_time.timestamp() for j in workers.ran if j.args[1] == "orders"}
    # 02:00 local, enqueued within one 5-minute tick.
    assert utc(2026, 5, 2, 1) <= fired[("london", "2026-05-01")] < utc(2026, 5, 2, 1, 5)  # BST, UTC+1
    assert utc(2026, 5, 2, 6) <= fired[("newyork", "2026-05-01")] < utc(2026, 5, 2, 6, 5)  # EDT, UTC-4
    assert utc(2026, 5, 1, 18) <= fired[("shanghai", "2026-05-01")] < utc(2026, 5, 1, 18, 5)  # UTC+8


async def test_a_restarted_scheduler_does_not_enqueue_again_what_already_ran(
    write_tenants: Write, make_scheduler: MakeScheduler, arq_redis: ArqRedis
) -> None:
    tenants = write_tenants({"acme": None})
    first = make_scheduler(tenants)
    assert await first.imports.tick(utc(2026, 5, 1, 2, 0, 1)) == len(MODULES)
    # The jobs run and arq keeps no result: arq alone would now accept the same ids again.
    ran = await SimulatedWorkers(arq_redis).run_due(utc(2026, 5, 1, 4))
    assert len(ran) == len(MODULES) and await jobs(arq_redis) == []
    restarted = make_scheduler(tenants)
    assert await restarted.imports.tick(utc(2026, 5, 1, 5)) == 0
    assert await jobs(arq_redis) == []


async def test_a_scheduler_down_at_0200_catches_up_once_when_it_starts(
    write_tenants: Write, make_scheduler: MakeScheduler, arq_redis: ArqRedis
) -> None:
    tenants = write_tenants({"acme": None, "globex": None})
    before = _sample("conduit_scheduler_missed_runs_caught_up_total", kind=IMPORT_EXPORT)
    five = utc(2026, 5, 1, 5)
    replicas = [make_scheduler(tenants) for _ in range(3)]
    added = await asyncio.gather(*(s.imports.tick(five) for s in replicas))
    assert sum(added) == 2 * len(MODULES)
    queued = await jobs(arq_redis, IMPORT_EXPORT)
    assert sorted(j.job_id or "" for j in queued) == sorted(
        import_job_id(t, m, "2026-04-30") for t in ("acme", "globex") for m in MODULES
    )
    # Spread again from 05:00, not released at once.
    assert all(five * 1000 <= (j.score or 0) < (five + 3600) * 1000 for j in queued)
    assert len({j.score for j in queued}) == len(queued)
    assert _sample("conduit_scheduler_missed_runs_caught_up_total", kind=IMPORT_EXPORT) == before + 2 * len(MODULES)
    for s in replicas:
        assert await s.imports.tick(five + 60) == 0


async def test_the_catch_up_window_bounds_how_far_back(
    write_tenants: Write, make_scheduler: MakeScheduler, arq_redis: ArqRedis
) -> None:
    scheduler = make_scheduler(write_tenants({"acme": None}), scheduler_catch_up=3 * 3600)
    assert await scheduler.imports.tick(utc(2026, 5, 1, 5, 30)) == 0  # 02:00 was 3.5 h ago
    assert await jobs(arq_redis) == []
    assert await scheduler.imports.tick(utc(2026, 5, 2, 2, 0, 1)) == len(MODULES)
    assert {j.args[2] for j in await jobs(arq_redis)} == {"2026-05-01"}


async def test_a_job_arq_already_has_is_left_alone_and_counted_done(
    write_tenants: Write, make_scheduler: MakeScheduler, arq_redis: ArqRedis
) -> None:
    manual = await arq_redis.enqueue_job(
        IMPORT_EXPORT, "acme", "orders", "2026-04-30", _job_id=import_job_id("acme", "orders", "2026-04-30")
    )
    assert manual is not None
    scheduler = make_scheduler(write_tenants({"acme": None}))
    assert await scheduler.imports.tick(utc(2026, 5, 1, 2, 0, 1)) == len(MODULES) - 1
    assert len(await jobs(arq_redis, IMPORT_EXPORT)) == len(MODULES)
    assert await arq_redis.sismember(ledger_key("2026-04-30"), import_job_id("acme", "orders", "2026-04-30"))


async def test_jobs_are_written_the_way_arq_writes_them(
    write_tenants: Write, make_scheduler: MakeScheduler, arq_redis: ArqRedis
) -> None:
    scheduler = make_scheduler(write_tenants({"acme": None}), scheduler_catch_up=86400)
    fire = utc(2026, 5, 1, 2)
    await scheduler.imports.tick(fire + 1)
    [job] = [j for j in await jobs(arq_redis) if j.args[1] == "orders"]
    assert (job.function, job.args, job.kwargs, job.job_try) == (
        IMPORT_EXPORT,
        ("acme", "orders", "2026-04-30"),
        {},
        None,
    )
    assert job.job_id == import_job_id("acme", "orders", "2026-04-30")
    assert job.enqueue_time.timestamp() == fire + 1
    assert fire * 1000 <= (job.score or 0) < (fire + 3600) * 1000
    # Like arq's enqueue_job: the job expires a day after it was meant to start.
    ttl_ms = await arq_redis.pttl(job_key_prefix + job.job_id)
    assert (job.score or 0) - (fire + 1) * 1000 + 86_400_000 - ttl_ms < 60_000
    ledger_ttl = await arq_redis.ttl(ledger_key("2026-04-30"))
    assert 2 * 86400 - 60 < ledger_ttl <= 2 * 86400


async def test_steady_state_ticks_do_no_redis_work_for_imports(
    write_tenants: Write, make_scheduler: MakeScheduler, monkeypatch: Any
) -> None:
    tenants = write_tenants({f"t{i}": None for i in range(20)})
    scheduler = make_scheduler(tenants, modules=[f"m{i}" for i in range(50)])
    assert await scheduler.imports.tick(utc(2026, 5, 1, 2, 0, 1)) == 1000
    calls: list[int] = []

    async def spy(jobs: Any, now: float) -> list[str]:
        calls.append(len(jobs))
        return []

    monkeypatch.setattr(scheduler.imports.enqueuer, "enqueue", spy)
    for second in range(2, 600):
        assert await scheduler.imports.tick(utc(2026, 5, 1, 2) + second) == 0
    assert calls == []
    assert [s for s in scheduler.imports.groups] == [Schedule("0 2 * * *", "UTC", 3600.0)]


def _day(n: int) -> str:
    """Day ``n`` counted from 1 April 2026 (31 is 1 May)."""
    return f"2026-04-{n:02d}" if n <= 30 else f"2026-05-{n - 30:02d}"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
