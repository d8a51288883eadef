"""`make run`'s demo: its imports start within a minute of start, and the banner says how to watch them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from devtools import run
from services.scheduler.import_plan import ImportPlanner, plan_fire
from services.scheduler.main import catalogue_modules
from services.scheduler.settings import SchedulerSettings
from shared import redis_keys
from shared.schedules import import_entries
from shared.tenants import load_tenants


@pytest.mark.parametrize("clock", ["00:30:00", "01:59:59", "02:00:00", "02:00:01", "12:00:00", "23:59:59"])
def test_the_demo_imports_start_within_a_minute_whenever_make_run_starts(tmp_path: Path, clock: str) -> None:
    env = run.demo_config(tmp_path, "http://127.0.0.1:9")
    groups = import_entries(load_tenants(Path(env["CONDUIT_TENANTS_FILE"]), resolve_secrets=False), catalogue_modules())
    planner = ImportPlanner(
        groups, SchedulerSettings(tenants_file=Path(env["CONDUIT_TENANTS_FILE"])).scheduler_catch_up
    )
    now = datetime.fromisoformat(f"2026-11-26T{clock}+00:00").timestamp()

    starts = [
        job.run_at
        for schedule, fire in planner.pending(now)
        for job in plan_fire(schedule, fire, groups[schedule], now)
    ]

    assert len(starts) == len(run.DEMO_TENANTS) * len(catalogue_modules())
    assert 0 <= min(starts) - now and max(starts) - now < 60


def test_the_banner_shows_how_to_see_the_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run, "RUN", tmp_path)
    (tmp_path / "demo").mkdir()
    database = "postgresql://postgres@127.0.0.1:5432/test"
    env = {
        "CONDUIT_PROXY_URL": "http://127.0.0.1:8080",
        "CONDUIT_IMPORTER_HTTP_PORT": "8081",
        "CONDUIT_SCHEDULER_HTTP_PORT": "8082",
        "CONDUIT_DEMO_PORT": "8090",
        "CONDUIT_DEMO_TOKEN_LIFETIME": "120",
        "CONDUIT_REDIS_URL": "redis://127.0.0.1:6379/0",
        "CONDUIT_DATABASE_URL": database,
        "CONDUIT_CONSOLE_PUBLIC_URL": "http://127.0.0.1:8083",
    }
    run._banner(env, tmp_path / "logs")
    banner = capsys.readouterr().out
    assert "conduit imports list" in banner and "conduit queue status" in banner
    assert f"psql '{database}'" in banner and "FROM import_runs" in banner
    assert f"start within {run.DEMO_IMPORT_SPREAD}" in banner
    assert "importer ops    http://127.0.0.1:8081/ready" in banner


async def test_make_run_forgets_demo_tokens_an_earlier_run_left(redis: Redis, redis_url: str) -> None:
    """A record sealed under another clone's key (or a key `make clean` removed) kept the proxy from ever
    being ready, and the restarted demo API would refuse any older token anyway."""
    other_tenant = redis_keys.token("someone", "demo")
    for tenant in (*run.DEMO_TENANTS, "someone"):
        await redis.hset(redis_keys.token(tenant, "demo"), "sealed", b"sealed under a key this run lacks")
        await redis.zadd(redis_keys.TOKENS_DUE, {redis_keys.pair_member(tenant, "demo"): 1.0})

    run._forget_demo_tokens(redis_url)

    assert [k.decode() for k in await redis.keys(redis_keys.token("*", "*"))] == [other_tenant]
    assert await redis.zrange(redis_keys.TOKENS_DUE, 0, -1) == [b"someone/demo"]
