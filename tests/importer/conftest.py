"""Fixtures for the importer: a migrated PostgreSQL database per test (a template's copy, dropped afterwards),
real Redis, the fake export server, and a real arq worker in burst mode to run import jobs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import pytest
import yaml
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job
from arq.worker import Worker
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from redis.asyncio import Redis

from conduit.db_cli import read_migrations
from services.importer.settings import ImporterSettings
from services.importer.worker import functions, shutdown, startup
from shared.db import create_pool as create_db_pool
from shared.job_json import CODEC, create_pool
from shared.jobs import IMPORT_EXPORT, import_job_id
from shared.modules import catalogue
from shared.tenants import TenantsConfig, load_tenants
from tests.importer.migrated_databases import MigratedDatabases
from tests.importer.support import Exports, running_exports

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "migrations"
TENANTS = ("acme", "globex")


def with_search_path(dsn: str, schema: str) -> str:
    """The DSN with ``search_path`` set (asyncpg passes unknown query parameters on as server settings)."""
    parts = urlsplit(dsn)
    query = "&".join(filter(None, [parts.query, urlencode({"search_path": schema})]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@dataclass
class Database:
    url: str
    pool: asyncpg.Pool

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.pool.fetch(sql, *args)]

    async def value(self, sql: str, *args: Any) -> Any:
        return await self.pool.fetchval(sql, *args)

    async def runs(self) -> list[dict[str, Any]]:
        return await self.rows("SELECT * FROM import_runs ORDER BY id")


@pytest.fixture(scope="session")
def database_url(server_urls: dict[str, str]) -> str:
    return server_urls["CONDUIT_DATABASE_URL"]


async def fresh_schema(database_url: str) -> tuple[str, str]:
    """An empty schema and a URL on it, for tests that migrate (or make tables) themselves."""
    schema = f"test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return schema, with_search_path(database_url, schema)


async def drop_schema(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def migrated_databases(database_url: str) -> Iterator[MigratedDatabases]:
    """This test process's template, migrated once; ``migrated_database`` copies it for each test."""
    databases = MigratedDatabases(database_url, read_migrations(MIGRATIONS))
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def migrated_database(migrated_databases: MigratedDatabases) -> Iterator[str]:
    """The URL of a migrated database of the test's own, dropped afterwards."""
    url = migrated_databases.create()
    try:
        yield url
    finally:
        migrated_databases.drop(url)


@pytest.fixture
async def db(migrated_database: str) -> AsyncIterator[Database]:
    """A migrated database of its own; every connection of the test (and its workers) uses it."""
    pool = await create_db_pool(migrated_database, min_size=1, max_size=4)
    try:
        yield Database(migrated_database, pool)
    finally:
        await pool.close()


# Generated tests that import into PostgreSQL: the same examples every run (a failure is reproduced by running
# again), no example database, and no deadline (an example is a whole import); pass max_examples beside it.
DB_EXAMPLES = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class LoopDb:
    """A migrated database of the test's own, for a sync test driving its own loop (hypothesis tests cannot be
    async): ``run`` runs a coroutine on ``loop``; ``conn`` is a pooled connection to it."""

    loop: asyncio.AbstractEventLoop
    conn: Any

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture
def loop_db(migrated_database: str) -> Iterator[LoopDb]:
    loop = asyncio.new_event_loop()
    try:
        pool = loop.run_until_complete(create_db_pool(migrated_database, min_size=1, max_size=1))
        conn = loop.run_until_complete(pool.acquire())
        try:
            yield LoopDb(loop, conn)
        finally:
            loop.run_until_complete(pool.release(conn))
            loop.run_until_complete(pool.close())
    finally:
        loop.close()


def write_tenants(directory: Path, tenants: tuple[str, ...] = TENANTS) -> Path:
    """A tenants file the importer can read (it needs names and providers, never secrets)."""
    data = {
        "providers": {
            "demo": {
                "token_url": "http://127.0.0.1:9/oauth/token",
                "api_base_url": "http://127.0.0.1:9/api/",
                "client_auth_method": "none",
            }
        },
        "tenants": {t: {"providers": {"demo": {"client_id": t}}} for t in tenants},
    }
    path = directory / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
async def exports() -> AsyncIterator[Exports]:
    async with running_exports() as running:
        yield running


@dataclass
class Importer:
    """Runs import jobs the way production does: enqueued in arq, run by a real worker (burst mode)."""

    settings: ImporterSettings
    tenants: TenantsConfig
    db: Database
    redis: Redis
    arq: ArqRedis
    workers: list[Worker] = field(default_factory=list)

    def with_settings(self, **overrides: Any) -> Importer:
        settings = self.settings.model_copy(update=overrides)
        return Importer(settings, self.tenants, self.db, self.redis, self.arq)

    def worker(self, **kwargs: Any) -> Worker:
        ctx = {"settings": self.settings, "tenants": self.tenants, "modules": catalogue(), "logging_configured": True}
        worker = Worker(
            functions(self.settings),  # type: ignore[arg-type]
            redis_pool=self.arq,
            on_startup=startup,
            on_shutdown=shutdown,
            burst=True,
            poll_delay=0,
            handle_signals=False,
            ctx=ctx,
            **CODEC,
            **kwargs,
        )
        self.workers.append(worker)
        return worker

    async def enqueue(self, tenant: str, module: str, date: str = "2024-05-01", job_id: str | None = None) -> Job:
        job = await self.arq.enqueue_job(
            IMPORT_EXPORT, tenant, module, date, _job_id=job_id or import_job_id(tenant, module, date)
        )
        assert job is not None, "a job with this id is already queued or kept"
        return job

    async def run(self, tenant: str = "acme", module: str = "transactions", date: str = "2024-05-01", **kw: Any) -> Any:
        """Enqueue one import, run a burst worker until the queue is empty, and return the job's result."""
        job = await self.enqueue(tenant, module, date, kw.pop("job_id", None))
        await self.drain(**kw)
        return await job.result(timeout=5, poll_delay=0.01)

    async def drain(self, **kw: Any) -> Worker:
        """Run one burst worker until the queue is empty (deferred retries included)."""
        worker = self.worker(**kw)
        try:
            await worker.main()
        finally:
            # Not worker.close(): it would close the test's own Redis pool.
            await shutdown(worker.ctx)
        return worker

    async def last_run(self) -> dict[str, Any]:
        runs = await self.db.runs()
        assert runs, "no import run was recorded"
        return runs[-1]


@pytest.fixture
async def importer(
    db: Database, redis: Redis, redis_url: str, exports: Exports, tmp_path: Path, token_key: SecretStr
) -> AsyncIterator[Importer]:
    settings = ImporterSettings(
        redis_url=redis_url,
        token_key=token_key,
        database_url=db.url,
        tenants_file=write_tenants(tmp_path),
        proxy_url=exports.url,
        importer_http_port=0,
        importer_temp_dir=tmp_path,
        importer_retry_base=0.05,
        importer_retry_max=0.2,
        importer_busy_defer=0.05,
        importer_slot_lease=5.0,
        importer_provider_rate=1000.0,
        importer_provider_burst=1000,
        importer_progress_rows=100,
        importer_copy_chunk_rows=500,
    )
    arq = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        yield Importer(settings, load_tenants(settings.tenants_file, resolve_secrets=False), db, redis, arq)
    finally:
        await arq.aclose()
