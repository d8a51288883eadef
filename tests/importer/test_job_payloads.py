"""Job payloads in Redis are data, never code: what the worker does with a payload it cannot read, and that
every job as Conduit enqueues it reaches its function with the types the function declares.

The attacker writes Redis: a pickled payload (what arq would unpickle by default) must never be unpickled,
only refused with a log line naming the job, and the worker must go on to the next job.
"""

from __future__ import annotations

import datetime as dt
import inspect
import pickle
import time
import typing
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from arq.connections import ArqRedis, RedisSettings
from arq.constants import default_queue_name, job_key_prefix, result_key_prefix
from arq.worker import Worker, func, get_kwargs
from redis.asyncio import Redis

from services.importer.outage_worker import OutageTolerantWorker
from services.importer.settings import ImporterSettings
from services.importer.worker import WorkerSettings, functions
from services.scheduler.enqueue import ImportEnqueuer
from services.scheduler.import_plan import PlannedImport
from services.scheduler.token_refresh import PlannedRefresh, enqueue_refreshes
from shared import reruns
from shared.import_runs import RunKey
from shared.job_json import create_pool, loads
from shared.jobs import IMPORT_EXPORT, REFRESH_TOKEN, import_job_id, refresh_job_id
from shared.redis_keys import scheduler_imports
from tests.importer.conftest import Database

BAD_ID = import_job_id("acme", "users", "2024-05-01")
GOOD_ARGS = ("acme", "users", "2024-05-02")
# In every bad payload: no log line may quote it.
SENTINEL = "payload-bytes-7f3a"


class _Touch:
    """Unpickling this creates a file: the proof that a payload was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def _pickled(marker: Path) -> bytes:
    job = {"t": 1, "f": IMPORT_EXPORT, "a": ("acme", SENTINEL, "2024-05-01"), "k": {}, "et": 0, "x": _Touch(marker)}
    return pickle.dumps(job)


PAYLOADS: dict[str, Callable[[Path], bytes]] = {
    "pickle": _pickled,
    "garbage": lambda _: b"\x00\xff not json " + SENTINEL.encode(),
    "json, not an object": lambda _: orjson.dumps([IMPORT_EXPORT, SENTINEL]),
    "json, args not a list": lambda _: orjson.dumps({"t": 1, "f": IMPORT_EXPORT, "a": SENTINEL, "k": {}, "et": 0}),
}


@pytest.fixture
async def pool(redis: Redis, redis_url: str) -> AsyncIterator[ArqRedis]:
    client = await create_pool(RedisSettings.from_dsn(redis_url))
    yield client
    await client.aclose()


def _worker_codec() -> dict[str, Any]:
    """The serializer pair as the arq CLI reads it from WorkerSettings (none: arq's pickle)."""
    return {k: v for k, v in get_kwargs(WorkerSettings).items() if k in ("job_serializer", "job_deserializer")}  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(PAYLOADS))
@pytest.mark.parametrize("worker_class", [Worker, OutageTolerantWorker], ids=["arq WorkerSettings", "conduit importer"])
async def test_a_payload_not_json_is_never_unpickled_and_the_next_job_runs(
    pool: ArqRedis, redis: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, worker_class: type
) -> None:
    marker = tmp_path / "unpickled"
    payload = PAYLOADS[kind](marker)
    # Written as an attacker (or an older version) would: the payload, its place in the queue, and, for a
    # scheduled import, its id in the scheduler's ledger. It is due before the good job.
    await redis.set(job_key_prefix + BAD_ID, payload)
    await redis.zadd(default_queue_name, {BAD_ID: int(time.time() * 1000) - 60_000})
    await redis.sadd(scheduler_imports("2024-05-01"), BAD_ID)
    good = await pool.enqueue_job(IMPORT_EXPORT, *GOOD_ARGS, _job_id=import_job_id(*GOOD_ARGS))
    assert good is not None
    ran: list[tuple[Any, ...]] = []

    async def record(ctx: dict[str, Any], *args: Any) -> str:
        ran.append(args)
        return "imported"

    worker = worker_class(
        [func(record, name=IMPORT_EXPORT)], redis_pool=pool, burst=True, poll_delay=0, max_jobs=1,
        handle_signals=False, **_worker_codec(),
    )  # fmt: skip
    await worker.main()

    assert not marker.exists(), "the payload was unpickled"
    assert ran == [GOOD_ARGS]
    assert await good.result(timeout=5, poll_delay=0.01) == "imported"
    assert worker.jobs_failed == 1
    refused = [r.getMessage() for r in caplog.records if BAD_ID in r.getMessage()]
    assert refused, "no log line names the refused job"
    assert SENTINEL not in caplog.text
    assert await redis.exists(job_key_prefix + BAD_ID) == 0
    if worker_class is OutageTolerantWorker:
        assert any("job refused" in line for line in refused)
        # No result kept and out of the ledger: the scheduler's own script enqueues the id again, as JSON.
        assert await redis.exists(result_key_prefix + BAD_ID) == 0
        now = time.time()
        again = PlannedImport("acme", "users", "2024-05-01", BAD_ID, now, now)
        assert await ImportEnqueuer(pool, 3600).enqueue([again], now) == [BAD_ID]
        assert loads(await redis.get(job_key_prefix + BAD_ID))["a"] == ("acme", "users", "2024-05-01")


def _bind(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The job's arguments fit its function's signature, each of the declared type."""
    function = {f.name: f.coroutine for f in functions(ImporterSettings())}[name]
    bound = inspect.signature(function).bind({}, *args, **kwargs)
    hints = typing.get_type_hints(function)
    for parameter, value in list(bound.arguments.items())[1:]:
        assert type(value) is hints[parameter], (name, parameter, value)


async def test_every_job_as_conduit_enqueues_it_reaches_its_function_with_the_declared_types(
    db: Database, pool: ArqRedis, redis: Redis
) -> None:
    now = time.time()
    # The scheduler: a day's import (its Lua script) and a token refresh.
    export = "2024-05-04"
    await ImportEnqueuer(pool, 3600).enqueue(
        [PlannedImport("acme", "users", export, import_job_id("acme", "users", export), now, now)], now
    )
    await enqueue_refreshes(pool, [PlannedRefresh("acme", "demo", refresh_job_id("acme", "demo", None), None)], now)
    # `conduit imports rerun` / `run-now` and the console's re-run buttons.
    async with db.pool.acquire() as conn:
        line = await reruns.enqueue(pool, conn, RunKey("acme", "users", dt.date(2024, 5, 3)))
    assert line.startswith("enqueued")
    # The console's forced refresh (services/console/actions.py refresh_token).
    await pool.enqueue_job(REFRESH_TOKEN, "acme", "demo", True, _job_id="refresh:acme:demo:operator:1")

    ids = [raw.decode() for raw in await redis.zrange(default_queue_name, 0, -1)]
    assert len(ids) == 4
    for job_id in ids:
        job = loads(await redis.get(job_key_prefix + job_id))
        _bind(job["f"], job["a"], job["k"])
