"""Faults against real Redis and PostgreSQL: a worker killed (SIGKILL) or stopped (SIGTERM) in the middle
of an import, and PostgreSQL restarting under one. Each time the table ends with exactly one run's rows,
readers never see half of them, and the ledger shows every attempt."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from conduit.db_cli import migrate
from devtools import processes, throwaway
from shared import redis_keys
from shared.jobs import import_job_id
from tests.importer.conftest import MIGRATIONS, Importer
from tests.importer.support import Exports, export_body

CONDUIT = str(Path(sys.executable).with_name("conduit"))
ROWS = 200_000
JOB = import_job_id("acme", "users", "2024-05-01")


def big_users_export() -> bytes:
    lines = "".join(f"{i},user{i},user{i}@example.com\n" for i in range(1, ROWS + 1))
    return export_body("users", "user_id,login,email\n" + lines)


@asynccontextmanager
async def progress_events(redis: Redis) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """Every progress event published while the block runs."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    pubsub = redis.pubsub()
    await pubsub.subscribe(redis_keys.events(redis))

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                await queue.put(orjson.loads(message["data"]))

    task = asyncio.create_task(listen())
    try:
        yield queue
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.aclose()


async def next_event(
    events: asyncio.Queue[dict[str, Any]], kind: str, pid: int = os.getpid(), timeout: float = 30.0
) -> dict[str, Any]:
    """The next event of ``kind`` from the worker with ``pid`` (other suites may run imports on this Redis)."""
    async with asyncio.timeout(timeout):
        while True:
            event = await events.get()
            if event["event"] == kind and event["worker"].endswith(f":{pid}"):
                return event


def worker_process(importer: Importer, log: Path) -> subprocess.Popen[bytes]:
    settings = importer.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env |= {
        "CONDUIT_REDIS_URL": settings.redis_url,
        "CONDUIT_DATABASE_URL": settings.database_url,
        "CONDUIT_TENANTS_FILE": str(settings.tenants_file),
        "CONDUIT_TOKEN_KEY": settings.token_key.get_secret_value() if settings.token_key else "",
        "CONDUIT_PROXY_URL": settings.proxy_url,
        "CONDUIT_IMPORTER_HTTP_PORT": "0",
        "CONDUIT_IMPORTER_POLL_DELAY": "0.05",
        "CONDUIT_IMPORTER_COPY_CHUNK_ROWS": "5000",
        "CONDUIT_IMPORTER_PROGRESS_ROWS": "10000",
    }
    with log.open("wb") as out:
        return subprocess.Popen([CONDUIT, "importer"], env=env, stdout=out, stderr=subprocess.STDOUT)


async def stop_mid_import(importer: Importer, tmp_path: Path, sig: int) -> tuple[int, str]:
    """Start a worker process on the big import and send it ``sig`` once 10 000 rows are in."""
    async with progress_events(importer.redis) as events:
        await importer.enqueue("acme", "users")
        log = tmp_path / "worker.log"
        proc = worker_process(importer, log)
        try:
            event = await next_event(events, "progress", proc.pid)
            assert event["rows"] < ROWS
            proc.send_signal(sig)
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, log.read_text(errors="replace")


async def assert_exactly_one_runs_rows(importer: Importer) -> None:
    count, total = (await importer.db.rows("SELECT count(*) AS n, sum(user_id) AS s FROM users"))[0].values()
    assert (count, total) == (ROWS, ROWS * (ROWS + 1) // 2)


async def test_sigkill_mid_import_then_pickup_leaves_one_runs_rows(
    importer: Importer, exports: Exports, tmp_path: Path
) -> None:
    exports.set("users", big_users_export())

    code, _ = await stop_mid_import(importer, tmp_path, signal.SIGKILL)

    assert code == -signal.SIGKILL
    assert await importer.db.value("SELECT count(*) FROM users") == 0
    assert [r["status"] for r in await importer.db.runs()] == ["running"]
    # arq hands the job on once its in-progress key expires (import timeout + 10 s, see test_limits);
    # the test expires it now instead of waiting.
    assert await importer.redis.delete(f"arq:in-progress:{JOB}") == 1
    await importer.drain()

    await assert_exactly_one_runs_rows(importer)
    runs = await importer.db.runs()
    assert [(r["attempt"], r["status"], r["error_class"]) for r in runs] == [
        (1, "failed", "abandoned"),
        (2, "succeeded", None),
    ]
    assert runs[1]["rows_imported"] == ROWS


async def test_sigterm_abandons_the_chunk_and_the_job_is_retried(
    importer: Importer, exports: Exports, tmp_path: Path
) -> None:
    exports.set("users", big_users_export())

    code, log = await stop_mid_import(importer, tmp_path, signal.SIGTERM)

    assert code == 0, log
    assert "Traceback" not in log
    assert await importer.db.value("SELECT count(*) FROM users") == 0
    runs = await importer.db.runs()
    assert [(r["status"], r["error_class"], r["will_retry"]) for r in runs] == [("failed", "interrupted", True)]
    # Back in the queue at once, not after a timeout.
    assert await importer.redis.zscore("arq:queue", JOB) is not None, log
    assert not await importer.redis.exists(f"arq:in-progress:{JOB}"), log

    await importer.drain()

    await assert_exactly_one_runs_rows(importer)
    assert [r["status"] for r in await importer.db.runs()] == ["failed", "succeeded"]


@pytest.fixture
async def private_postgres(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A throwaway PostgreSQL of this test's own, which it may restart (never the shared one)."""
    home = tmp_path / "pg"
    server = await asyncio.to_thread(throwaway.start_postgres, home)
    try:
        await migrate(server.url, MIGRATIONS)
        yield server.url, home
    finally:
        await asyncio.to_thread(throwaway.discard, home)


def restart_postgres(home: Path) -> None:
    pg_ctl = throwaway.postgres_tools(home) / "pg_ctl"
    files = throwaway.files_dir(home)
    # -l: the restarted server must not inherit our pipes, or waiting for pg_ctl would wait for the server.
    command = [pg_ctl, "restart", "-w", "-m", "fast", "-D", files / "data", "-l", files / "postgres.log"]
    processes.run(command, processes.unprivileged_user())


async def test_postgres_restarting_mid_import_is_retried_and_never_half_visible(
    importer: Importer, exports: Exports, private_postgres: tuple[str, Path]
) -> None:
    url, home = private_postgres
    exports.set("users", big_users_export())
    seen: set[int] = set()
    restarted = asyncio.Event()

    async def read_counts() -> None:
        """A reader counting the table all along, until it sees the whole import."""
        while ROWS not in seen:
            try:
                conn = await asyncpg.connect(url, timeout=2)
                try:
                    while ROWS not in seen:
                        seen.add(await conn.fetchval("SELECT count(*) FROM users"))
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError):
                await asyncio.sleep(0.05)  # the server is restarting; try again

    async def restart_mid_import(events: asyncio.Queue[dict[str, Any]]) -> None:
        await next_event(events, "progress")
        await asyncio.to_thread(restart_postgres, home)
        restarted.set()

    reader = asyncio.create_task(read_counts())
    try:
        async with progress_events(importer.redis) as events:
            restarter = asyncio.create_task(restart_mid_import(events))
            local = importer.with_settings(
                database_url=url, importer_copy_chunk_rows=5000, importer_progress_rows=10000
            )
            await local.run("acme", "users")
            await restarter
        await asyncio.wait_for(reader, timeout=20)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    assert restarted.is_set()
    assert seen <= {0, ROWS} and ROWS in seen
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == ROWS
        runs = [dict(r) for r in await conn.fetch("SELECT attempt, status, error_class FROM import_runs ORDER BY id")]
    finally:
        await conn.close()
    assert runs[-1]["status"] == "succeeded"
    assert [r["status"] for r in runs[:-1]] == ["failed"] * (len(runs) - 1) and len(runs) >= 2
