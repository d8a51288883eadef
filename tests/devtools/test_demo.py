"""`make run`'s demo: its imports start within a minute of start, and the banner says how to watch them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from devtools import run
from services.scheduler.import_plan import ImportPlanner, plan_fire
from services.scheduler.main import catalogue_modules
from services.scheduler.schedules import import_entries
from services.scheduler.settings import SchedulerSettings
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
        "CONDUIT_WORKER_HTTP_PORT": "8081",
        "CONDUIT_SCHEDULER_HTTP_PORT": "8082",
        "CONDUIT_DEMO_PORT": "8090",
        "CONDUIT_DEMO_TOKEN_LIFETIME": "120",
        "CONDUIT_REDIS_URL": "redis://127.0.0.1:6379/0",
        "CONDUIT_DATABASE_URL": database,
    }
    run._banner(env, tmp_path / "logs")
    banner = capsys.readouterr().out
    assert "conduit imports list" in banner and "conduit queue status" in banner
    assert f"psql '{database}'" in banner and "FROM import_runs" in banner
    assert f"start within {run.DEMO_IMPORT_SPREAD}" in banner
