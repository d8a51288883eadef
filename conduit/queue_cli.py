"""`conduit queue ...`: what arq's queue holds, per job kind.

arq keeps a job in one sorted set (``arq:queue``, scored by when it may start),
its payload under ``arq:job:<id>``, an ``arq:in-progress:<id>`` key while a
worker runs it, and its outcome under ``arq:result:<id>`` for ``keep_result``
seconds. This command reads those keys and nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import click
import orjson
from tabulate import tabulate

from conduit.cli_support import guard, reaching_postgres, reaching_redis
from shared.jobs import IMPORT_EXPORT, REFRESH_TOKEN

_CHUNK = 1000


@dataclass
class KindStatus:
    kind: str
    queued: int = 0
    running: int = 0
    deferred: int = 0
    failed: int = 0
    oldest_queued_age: float | None = None  # seconds since the oldest queued job could have started


@click.group()
def queue() -> None:
    """Inspect arq's job queue."""


@queue.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job kind instead of a table.")
def queue_status(as_json: bool) -> None:
    """Queued, running, deferred and failed jobs per kind, and how long the oldest queued job has waited.

    Failed imports are the ledger's: imports whose latest attempt failed, the runs
    `conduit imports list --status failed` shows (plus any import job that crashed before the ledger
    could record it). Other kinds' failures come from the results arq still keeps (``keep_result``).
    """
    rows = guard(lambda: asyncio.run(_status()))
    if as_json:
        click.echo(orjson.dumps([asdict(r) for r in rows], option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo("no jobs queued, running, deferred or failed")
        return
    table = [[r.kind, r.queued, r.running, r.deferred, r.failed, _age(r.oldest_queued_age)] for r in rows]
    click.echo(tabulate(table, headers=["kind", "queued", "running", "deferred", "failed", "oldest queued"]))


async def _status() -> list[KindStatus]:
    from shared.db import DatabaseSettings
    from shared.job_json import JsonArqRedis
    from shared.redis_connect import connect
    from shared.settings import CommonSettings

    settings = CommonSettings()
    database_url = DatabaseSettings().database_url
    redis = connect(
        settings.redis_url,
        settings.redis_location(),
        JsonArqRedis,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
    )
    try:
        with reaching_redis(settings.redis_url):
            rows = await queue_status_rows(redis, time.time())
    finally:
        await redis.aclose()
    with reaching_postgres(database_url):
        failed_imports = await _failed_imports(database_url, timeout=5.0)
    return with_failed_imports(rows, failed_imports)


def with_failed_imports(rows: list[KindStatus], failed: int) -> list[KindStatus]:
    """The rows with the ledger's count of failed imports added (a row of its own if nothing is queued)."""
    by_kind = {r.kind: r for r in rows}
    if failed:
        by_kind.setdefault(IMPORT_EXPORT, KindStatus(IMPORT_EXPORT)).failed += failed
    return sorted(by_kind.values(), key=lambda r: r.kind)


# The latest attempt of each (tenant, module, export date), as services.importer.ledger lists them.
_FAILED_IMPORTS = """
SELECT count(*) FROM (
    SELECT DISTINCT ON (tenant_id, module, export_date) status FROM import_runs
    ORDER BY tenant_id, module, export_date, attempt DESC
) AS latest WHERE status = 'failed'
"""


async def _failed_imports(database_url: str, timeout: float) -> int:
    import asyncpg

    conn = await asyncpg.connect(database_url, timeout=timeout)
    try:
        return int(await conn.fetchval(_FAILED_IMPORTS))
    except asyncpg.UndefinedTableError:
        return 0  # not migrated yet: no import has run, so none has failed
    finally:
        await conn.close()


async def queue_status_rows(redis: Any, now: float) -> list[KindStatus]:
    """The status of every job kind in the queue and in arq's kept results, sorted by kind."""
    from arq.constants import default_queue_name

    kinds: dict[str, KindStatus] = {}
    entries = await redis.zrange(default_queue_name, 0, -1, withscores=True)
    for chunk in _chunks(entries):
        await _count_queued(redis, chunk, now, kinds)
    await _count_failed(redis, kinds)
    return sorted(kinds.values(), key=lambda r: r.kind)


async def _count_queued(redis: Any, chunk: list[tuple[bytes, float]], now: float, kinds: dict[str, KindStatus]) -> None:
    from arq.constants import in_progress_key_prefix, job_key_prefix

    ids = [raw.decode() for raw, _ in chunk]
    payloads = await redis.mget([job_key_prefix + i for i in ids])
    running = await redis.mget([in_progress_key_prefix + i for i in ids])
    for job_id, (_, score), payload, busy in zip(ids, chunk, payloads, running, strict=True):
        kind, enqueued_ms = _describe(job_id, payload)
        row = kinds.setdefault(kind, KindStatus(kind))
        if busy is not None:
            row.running += 1
        elif score > now * 1000:
            row.deferred += 1
        else:
            row.queued += 1
            # Since its score: when it was meant to start (an import caught up late has waited since its
            # fire time). A due refresh is scored a day early to go ahead of imports: since it was enqueued.
            start_ms = max(score, enqueued_ms) if kind == REFRESH_TOKEN else score
            age = now - start_ms / 1000
            row.oldest_queued_age = max(age, row.oldest_queued_age or 0.0)


async def _count_failed(redis: Any, kinds: dict[str, KindStatus]) -> None:
    from arq.constants import result_key_prefix
    from arq.jobs import DeserializationError, deserialize_result

    from shared.job_json import loads

    keys = [key async for key in redis.scan_iter(match=result_key_prefix + "*", count=_CHUNK)]
    for start in range(0, len(keys), _CHUNK):
        for raw in await redis.mget(keys[start : start + _CHUNK]):
            if raw is None:
                continue
            try:
                result = deserialize_result(raw, deserializer=loads)
            except DeserializationError:
                continue
            # A job that fails returns "failed: ..." (an import after recording it in the ledger, which
            # with_failed_imports counts; a refresh so that arq's retries cannot bypass the backoff).
            # An import that raised never reached the ledger: arq's result is all there is of it.
            said_failed = isinstance(result.result, str) and result.result.startswith("failed")
            if not result.success or (said_failed and result.function != IMPORT_EXPORT):
                kinds.setdefault(result.function, KindStatus(result.function)).failed += 1


def _describe(job_id: str, payload: bytes | None) -> tuple[str, float]:
    """The job's function name and when it was enqueued (ms; 0 if unknown).

    A job whose payload expired, or cannot be read (not JSON: queued by an older version, which pickled, or
    not by Conduit; the importer refuses it), is named by its id's prefix and which of the two it is.
    """
    from arq.jobs import DeserializationError, deserialize_job

    from shared.job_json import loads

    state = "(expired)"
    if payload is not None:
        try:
            job = deserialize_job(payload, deserializer=loads)
        except DeserializationError:
            state = "(unreadable)"
        else:
            return job.function, job.enqueue_time.timestamp() * 1000
    prefix, sep, _ = job_id.partition(":")
    return (f"{prefix} {state}" if sep else state), 0.0


def _chunks(entries: list[tuple[bytes, float]]) -> Iterator[list[tuple[bytes, float]]]:
    for start in range(0, len(entries), _CHUNK):
        yield entries[start : start + _CHUNK]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
