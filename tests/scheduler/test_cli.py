"""`conduit scheduler plan`, `conduit queue status`, and `conduit scheduler` refusing a bad tenants file."""

from __future__ import annotations

import asyncio
import pickle
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.worker import Worker, func
from click.testing import CliRunner

from conduit.cli import main
from services.scheduler.main import Scheduler, catalogue_modules
from shared.job_json import CODEC
from shared.jobs import IMPORT_EXPORT, REFRESH_TOKEN, import_job_id
from shared.tenants import TenantsConfig
from tests.importer.conftest import with_search_path
from tests.scheduler.support import jobs, tenants_yaml, utc

CONDUIT = str(Path(sys.executable).with_name("conduit"))


async def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    # The commands run their own event loop, so they run in a thread beside this test's.
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def tenants(write_tenants: Callable[..., TenantsConfig]) -> TenantsConfig:
    return write_tenants({"acme": None, "shanghai": {"schedule": {"timezone": "Asia/Shanghai"}, "spread": 0}})


@pytest.fixture
def env(tenants: TenantsConfig, redis_url: str, server_urls: dict[str, str]) -> dict[str, str]:
    # `queue status` counts failed imports in the ledger: here a schema with none (it does not exist).
    database = with_search_path(server_urls["CONDUIT_DATABASE_URL"], f"no_ledger_{secrets.token_hex(4)}")
    return {"CONDUIT_REDIS_URL": redis_url, "CONDUIT_TENANTS_FILE": str(tenants.path), "CONDUIT_DATABASE_URL": database}


async def test_plan_shows_a_days_imports_and_enqueues_nothing(
    env: dict[str, str], tenants: TenantsConfig, make_scheduler: Callable[..., Scheduler], arq_redis: ArqRedis
) -> None:
    code, out, _ = await invoke(env, "scheduler", "plan", "--date", "2026-05-01", "--module", "orders", "--json")
    assert code == 0
    rows = {r["tenant"]: r for r in orjson.loads(out)}
    assert rows["acme"]["fires_at"] == utc(2026, 5, 1, 2) and rows["acme"]["export_date"] == "2026-04-30"
    assert utc(2026, 5, 1, 2) <= rows["acme"]["starts_at"] < utc(2026, 5, 1, 3)
    # 02:00 on 1 May in Shanghai is 18:00 UTC on 30 April; no spread window (only the 1-second stagger).
    assert rows["shanghai"]["fires_at"] == utc(2026, 4, 30, 18)
    assert utc(2026, 4, 30, 18) <= rows["shanghai"]["starts_at"] < utc(2026, 4, 30, 18, 0, 1)
    assert {r["state"] for r in rows.values()} == {"pending"}
    assert await jobs(arq_redis) == []

    await make_scheduler(tenants, modules=catalogue_modules()).imports.tick(utc(2026, 5, 1, 2, 0, 1))
    code, out, _ = await invoke(env, "scheduler", "plan", "--date", "2026-05-01", "--tenant", "acme")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["fires", "(UTC)", "starts", "(UTC)"]
    orders = next(line for line in lines if " orders " in line)
    assert "2026-05-01 02:00:00" in orders and "2026-04-30" in orders and orders.endswith("enqueued")
    assert lines[-1] == f"{len(catalogue_modules())} imports fire on 2026-05-01"


async def test_plan_without_redis_still_plans(env: dict[str, str]) -> None:
    """The plan is printed, its state unknown; like every command whose store is out of reach, exit code 1."""
    env = {**env, "CONDUIT_REDIS_URL": "redis://127.0.0.1:1/0", "CONDUIT_REDIS_TIMEOUT": "0.2"}
    code, out, err = await invoke(env, "scheduler", "plan", "--date", "2026-05-01", "--module", "orders", "--json")
    assert code == 1 and "cannot reach Redis at redis://127.0.0.1:1/0" in err
    assert {r["state"] for r in orjson.loads(out)} == {"?"}


async def test_plan_names_an_unknown_tenant(env: dict[str, str]) -> None:
    code, _, err = await invoke(env, "scheduler", "plan", "--tenant", "initech")
    assert code == 1 and "unknown tenant 'initech'" in err


async def test_queue_status_counts_each_kind(env: dict[str, str], arq_redis: ArqRedis) -> None:
    now = datetime.now(UTC)
    for module, delay in (("orders", -600), ("invoices", -60), ("customers", 3600)):
        job_id = import_job_id("acme", module, "2026-04-30")
        await arq_redis.enqueue_job(
            IMPORT_EXPORT, "acme", module, "2026-04-30", _job_id=job_id, _defer_until=now + timedelta(seconds=delay)
        )
    await arq_redis.enqueue_job(REFRESH_TOKEN, "acme", "demo", _job_id="refresh:acme:demo:init")
    await arq_redis.set(in_progress_key_prefix + "refresh:acme:demo:init", b"1")
    await _one_failed_import(arq_redis)

    code, out, _ = await invoke(env, "queue", "status", "--json")
    assert code == 0
    rows = {r["kind"]: r for r in orjson.loads(out)}
    imports, refreshes = rows[IMPORT_EXPORT], rows[REFRESH_TOKEN]
    assert (imports["queued"], imports["running"], imports["deferred"], imports["failed"]) == (2, 0, 1, 1)
    assert 600 <= imports["oldest_queued_age"] < 660
    assert (refreshes["queued"], refreshes["running"], refreshes["deferred"]) == (0, 1, 0)
    # A due refresh is scored a day early to go ahead of imports; it has waited since it was enqueued.
    await arq_redis.enqueue_job(
        REFRESH_TOKEN,
        "globex",
        "demo",
        _job_id="refresh:globex:demo:init",
        _defer_until=now - timedelta(days=1),
        _expires=3600,
    )
    code, out, _ = await invoke(env, "queue", "status", "--json")
    refreshes = {r["kind"]: r for r in orjson.loads(out)}[REFRESH_TOKEN]
    assert refreshes["queued"] == 1 and refreshes["oldest_queued_age"] < 60
    code, out, _ = await invoke(env, "queue", "status")
    assert code == 0
    assert out.splitlines()[0].split() == ["kind", "queued", "running", "deferred", "failed", "oldest", "queued"]
    assert any(line.split()[:5] == [IMPORT_EXPORT, "2", "0", "1", "1"] for line in out.splitlines())


class _Touch:
    """Unpickling this creates a file: the proof that the CLI unpickled a payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


async def test_queue_status_never_unpickles_and_names_an_unreadable_job(
    env: dict[str, str], arq_redis: ArqRedis, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"t": 1, "f": IMPORT_EXPORT, "a": (), "k": {}, "et": 0, "x": _Touch(marker)})
    job_id = import_job_id("acme", "orders", "2026-04-30")
    await arq_redis.set(job_key_prefix + job_id, payload)
    await arq_redis.zadd(arq_redis.default_queue_name, {job_id: 0})
    # A kept result written as an older version (or anyone) would: pickled as well.
    await arq_redis.set(result_key_prefix + "refresh:acme:demo:1", payload)
    code, out, _ = await invoke(env, "queue", "status", "--json")
    assert code == 0 and not marker.exists(), "the CLI unpickled a payload"
    assert {r["kind"]: r["queued"] for r in orjson.loads(out)} == {"import (unreadable)": 1}


async def _one_failed_import(redis: ArqRedis) -> None:
    """A permanent failure, as a real arq worker records it (on a queue of its own)."""

    async def import_export(ctx: dict[str, Any], *args: str) -> None:
        raise ValueError("missing column 'amount'")

    await redis.enqueue_job(IMPORT_EXPORT, "acme", "payments", "2026-04-30", _queue_name="failing", _job_id="x")
    worker = Worker(
        [func(import_export, name=IMPORT_EXPORT, max_tries=1)],  # type: ignore[arg-type]
        redis_pool=redis,
        queue_name="failing",
        burst=True,
        poll_delay=0,
        handle_signals=False,
        **CODEC,
    )
    await worker.main()
    assert worker.jobs_failed == 1


@pytest.mark.parametrize(
    ("imports", "named"),
    [
        ({"modules": {"orders": {"schedule": {"cron": "0 25 * * *"}}}}, "tenant 'acme', module 'orders'"),
        ({"modules": {"orders": {"schedule": {"timezone": "Europe/Pariss"}}}}, "tenant 'acme', module 'orders'"),
        ({"exclude": ["ordres"]}, "tenant 'acme', module 'ordres', key 'imports.exclude': unknown module"),
    ],
)
def test_the_scheduler_refuses_to_start_on_a_bad_schedule(tmp_path: Path, imports: dict[str, Any], named: str) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(tenants_yaml({"acme": imports})))
    env = {"CONDUIT_TENANTS_FILE": str(path), "CONDUIT_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([CONDUIT, "scheduler"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1  # docs/operations.md, "Exit codes"
    assert str(path) in done.stderr and named in done.stderr


def test_a_taken_ops_port_stops_the_scheduler_with_one_clear_line(tenants: TenantsConfig, redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "CONDUIT_TENANTS_FILE": str(tenants.path),
            "CONDUIT_REDIS_URL": redis_url,
            "CONDUIT_SCHEDULER_HTTP_HOST": "127.0.0.1",
            "CONDUIT_SCHEDULER_HTTP_PORT": str(port),
            "PATH": "/usr/bin:/bin",
        }
        done = subprocess.run([CONDUIT, "scheduler"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "address already in use" in done.stderr.lower()
    assert "Traceback" not in done.stderr
