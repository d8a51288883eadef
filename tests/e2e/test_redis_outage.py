"""End to end: Redis goes away for 0.5 s and for 15 s under a running worker, scheduler and proxy.

The Redis is this test's own redis-server, killed and started again on the same port (with an
append-only file, so the queue survives, as a production queue's Redis must). Each process must live
through it, still the same PID; answer /ready 503 while Redis is away and 200 once it is back; and work
again: the worker runs a job enqueued after the outage, the scheduler enqueues, the proxy forwards
with a token. An import running when Redis went away commits once and is recorded once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yaml
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from devtools.processes import free_port
from shared.job_json import create_pool
from shared.jobs import IMPORT_EXPORT, import_job_id
from tests.e2e.processes import Service, Services, base_env, wait_ready
from tests.helpers import tenants_file
from tests.importer.support import Exports, export_body, running_exports
from tests.private_redis import PrivateRedis
from tests.third_party import ThirdParty, running_third_party

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

USERS = 2_000
USERS_CSV = "user_id,login,email\n" + "".join(f"{i},user{i},user{i}@example.com\n" for i in range(1, USERS + 1))
CURRENCIES_CSV = "code,name,decimals\nEUR,Euro,2\nJPY,Yen,0\n"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory, durable=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def party() -> AsyncIterator[ThirdParty]:
    # 4 s tokens: the scheduler has a refresh to enqueue every 2 s, and one is overdue after the outage.
    async with running_third_party(lifetime=4) as tp:
        yield tp


@pytest.fixture
async def exports() -> AsyncIterator[Exports]:
    async with running_exports() as running:
        yield running


@asynccontextmanager
async def arq_client(url: str) -> AsyncIterator[ArqRedis]:
    """A client of its own each time: one opened before the restart would hold dead connections."""
    client = await create_pool(RedisSettings.from_dsn(url))
    try:
        yield client
    finally:
        await client.aclose()


def start_services(
    tmp_path: Path,
    party: ThirdParty,
    exports: Exports,
    redis_url: str,
    database_url: str,
    token_key: SecretStr,
    only: tuple[str, ...] = ("proxy", "importer", "scheduler"),
) -> tuple[Services, dict[str, Service]]:
    path = tenants_file(tmp_path, party, ["acme"])
    data = yaml.safe_load(path.read_text())
    # No daily imports: the only imports are the test's own.
    data["tenants"]["acme"]["imports"] = {"include": []}
    path.write_text(yaml.safe_dump(data))
    ports = {name: free_port() for name in only}
    env = base_env(
        CONDUIT_REDIS_URL=redis_url,
        CONDUIT_DATABASE_URL=database_url,
        CONDUIT_TENANTS_FILE=str(path),
        CONDUIT_TOKEN_KEY=token_key.get_secret_value(),
        CONDUIT_LOG_LEVEL="DEBUG",
        CONDUIT_PROXY_HOST="127.0.0.1",
        CONDUIT_PROXY_PORT=str(ports.get("proxy", 0)),
        CONDUIT_IMPORTER_HTTP_PORT=str(ports.get("importer", 0)),
        CONDUIT_SCHEDULER_HTTP_PORT=str(ports.get("scheduler", 0)),
        CONDUIT_IMPORTER_POLL_DELAY="0.1",
        # The worker fetches exports straight from the fake (the proxy's own part is /resources below).
        CONDUIT_PROXY_URL=exports.url,
        CONDUIT_IMPORTER_RETRY_BASE="0.2",
        CONDUIT_IMPORTER_RETRY_MAX="1",
    )
    services = Services(env, tmp_path)
    return services, {name: services.start(name, name, ops_port=port) for name, port in ports.items()}


async def enqueue_import(redis_url: str, module: str, date: str) -> str:
    job_id = import_job_id("acme", module, date)
    async with arq_client(redis_url) as client:
        assert await client.enqueue_job(IMPORT_EXPORT, "acme", module, date, _job_id=job_id) is not None
    return job_id


async def job_result(redis_url: str, job_id: str) -> object:
    async with arq_client(redis_url) as client:
        return await Job(job_id, client, _deserializer=client.job_deserializer).result(timeout=20, poll_delay=0.05)


async def attempts(database_url: str, job_id: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT status FROM import_runs WHERE job_id = $1 ORDER BY attempt", job_id)
    finally:
        await conn.close()
    return [r["status"] for r in rows]


async def until_recorded(database_url: str, job_id: str, service: Service) -> None:
    """Wait for the import to commit (the ledger is in PostgreSQL, which stays up)."""
    deadline = time.monotonic() + 20
    while await attempts(database_url, job_id) != ["succeeded"]:
        assert service.proc.poll() is None, f"worker exited:\n{service.output()[-3000:]}"
        assert time.monotonic() < deadline, await attempts(database_url, job_id)
        await asyncio.sleep(0.05)  # polling PostgreSQL, which has no event to wait on


async def enqueued_total(session: aiohttp.ClientSession, scheduler: Service) -> float:
    async with session.get(f"{scheduler.ops_url}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "conduit_scheduler_jobs_enqueued_total"
    )


async def until_scheduler_enqueues(session: aiohttp.ClientSession, scheduler: Service) -> None:
    before = await enqueued_total(session, scheduler)
    deadline = time.monotonic() + 15
    while await enqueued_total(session, scheduler) <= before:
        assert scheduler.proc.poll() is None, f"scheduler exited:\n{scheduler.output()[-3000:]}"
        assert time.monotonic() < deadline, "the scheduler enqueued nothing after the outage"
        await asyncio.sleep(0.1)  # polling another process's metrics


@pytest.mark.parametrize("outage", [0.5, 15.0], ids=["blip", "15s"])
async def test_every_process_lives_through_redis_going_away(
    outage: float,
    private_redis: PrivateRedis,
    party: ThirdParty,
    exports: Exports,
    database_url: str,
    token_key: SecretStr,
    tmp_path: Path,
) -> None:
    url = private_redis.url
    body = export_body("users", USERS_CSV)
    stalled = exports.set("users", body, pause_after=len(body) // 2)
    exports.set("currencies", export_body("currencies", CURRENCIES_CSV))
    services, running = start_services(tmp_path, party, exports, url, database_url, token_key)
    try:
        async with aiohttp.ClientSession() as session:
            for service in running.values():
                await wait_ready(session, service)
            pids = {name: service.proc.pid for name, service in running.items()}
            # Mid-import: the worker has the export half read when Redis goes away.
            mid_import = await enqueue_import(url, "users", "2024-05-01")
            await asyncio.wait_for(stalled.paused.wait(), 20)

            private_redis.stop()
            down_at = time.monotonic()
            stalled.resume.set()
            if outage > 5:
                # The import commits while Redis is away; only writing arq's result has to wait.
                await until_recorded(database_url, mid_import, running["importer"])
                for service in running.values():
                    await wait_ready(session, service, timeout=10, status=503)
            # The outage itself: its length is what this test is about, not a stand-in for an event.
            await asyncio.sleep(max(0.0, outage - (time.monotonic() - down_at)))
            private_redis.start()

            for service in running.values():
                await wait_ready(session, service, timeout=15)
            assert {name: service.proc.pid for name, service in running.items()} == pids

            assert str(await job_result(url, mid_import)).startswith("succeeded")
            assert await attempts(database_url, mid_import) == ["succeeded"]
            after = await enqueue_import(url, "currencies", "2024-05-01")
            assert str(await job_result(url, after)).startswith("succeeded")
            await until_scheduler_enqueues(session, running["scheduler"])
            async with session.get(
                f"{running['proxy'].ops_url}/resources/42", headers={"X-Tenant-ID": "acme"}
            ) as response:
                assert response.status == 200
            assert party.valid(party.api_calls[-1].headers.get("Authorization"))
            assert all(service.proc.poll() is None for service in running.values())
    finally:
        codes = services.stop_all()
    assert codes == {"proxy": 0, "importer": 0, "scheduler": 0}
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE tenant_id = 'acme'") == USERS
    finally:
        await conn.close()


async def test_a_worker_stopped_while_redis_is_away_leaves_its_committed_import_to_the_ledger(
    private_redis: PrivateRedis,
    party: ThirdParty,
    exports: Exports,
    database_url: str,
    token_key: SecretStr,
    tmp_path: Path,
) -> None:
    """SIGTERM during the outage, after the import committed: the outcome never reaches arq, so arq hands the
    job out again, and the next worker finds it done in the ledger instead of importing it twice."""
    url = private_redis.url
    body = export_body("users", USERS_CSV)
    stalled = exports.set("users", body, pause_after=len(body) // 2)
    services, running = start_services(tmp_path, party, exports, url, database_url, token_key, only=("importer",))
    worker = running["importer"]
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, worker)
        job_id = await enqueue_import(url, "users", "2024-05-01")
        await asyncio.wait_for(stalled.paused.wait(), 20)
        private_redis.stop()
        stalled.resume.set()
        await until_recorded(database_url, job_id, worker)
        await wait_ready(session, worker, timeout=10, status=503)
        assert worker.stop(timeout=15) == 0, worker.output()[-3000:]
        assert "importer stopped" in worker.output()

        private_redis.start()
        async with arq_client(url) as client:
            # Its in-progress key would expire after the job timeout; expire it now instead of waiting.
            assert await client.delete(f"arq:in-progress:{job_id}") == 1
        _, again = start_services(tmp_path, party, exports, url, database_url, token_key, only=("importer",))
        try:
            assert str(await job_result(url, job_id)).startswith("succeeded: 2000 rows imported")
        finally:
            assert again["importer"].stop() == 0
    assert await attempts(database_url, job_id) == ["succeeded"]
    assert len(exports.calls) == 1


async def test_a_worker_started_while_redis_is_away_waits_for_it(
    private_redis: PrivateRedis,
    party: ThirdParty,
    exports: Exports,
    database_url: str,
    token_key: SecretStr,
    tmp_path: Path,
) -> None:
    """A pod may start in the middle of an outage: the worker answers liveness at once, says it is not
    ready, and starts working when Redis comes (arq alone tries 30 times, serving nothing, then exits)."""
    url = private_redis.url
    private_redis.stop()
    exports.set("currencies", export_body("currencies", CURRENCIES_CSV))
    services, running = start_services(tmp_path, party, exports, url, database_url, token_key, only=("importer",))
    worker = running["importer"]
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, worker, timeout=15, status=503)
            async with session.get(f"{worker.ops_url}/health_check") as response:
                assert response.status == 200
            async with session.get(f"{worker.ops_url}/ready") as response:
                assert (await response.json())["checks"]["redis"] == "not connected yet"
            pid = worker.proc.pid

            private_redis.start()
            await wait_ready(session, worker, timeout=15)
            assert worker.proc.pid == pid
            job_id = await enqueue_import(url, "currencies", "2024-05-01")
            assert str(await job_result(url, job_id)).startswith("succeeded")
    finally:
        codes = services.stop_all()
    assert codes == {"importer": 0}
    assert "redis unavailable at start; the worker waits for it" in worker.output()


async def test_a_worker_stopped_before_redis_ever_answered_exits_cleanly(
    private_redis: PrivateRedis,
    party: ThirdParty,
    exports: Exports,
    database_url: str,
    token_key: SecretStr,
    tmp_path: Path,
) -> None:
    private_redis.stop()
    url = private_redis.url
    _, running = start_services(tmp_path, party, exports, url, database_url, token_key, only=("importer",))
    worker = running["importer"]
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, worker, timeout=15, status=503)
    assert worker.stop(timeout=15) == 0, worker.output()[-3000:]
    assert "importer stopped" in worker.output()
