"""arq's ``Worker``, living through a Redis outage of any length instead of exiting.

arq lets every Redis error end ``Worker.main``, and with it the process: in the poll loop
(``_poll_iteration``: reading the queue, ``start_jobs``, ``heart_beat``) and in the job tasks, whose
errors that loop re-raises (``run_job``'s first reads, ``finish_job``'s write of the outcome). Neither
arq nor redis-py has a setting for "wait for Redis and carry on": ``RedisSettings.conn_retries`` only
covers the first connection, and a redis-py ``Retry`` that never gives up would hang /ready and SIGTERM
during an outage and stall running imports on their progress events. So this subclass wraps those
methods, each around arq's own code:

- the poll loop waits and tries again (0.1 s doubling to 2 s), saying so once per outage, and writes the
  health key at once when Redis is back (``arq --check`` reads it);
- a job's outcome (result, retry, hand-back) is written when Redis is back, however long that takes,
  so a job that ran is not run again; only a stopping worker gives up (the job's in-progress key then
  hands it on, and the ledger keeps a committed import from being imported twice);
- a job whose start failed is handed back at once rather than when its in-progress key expires;
- at start it waits for Redis as long as it takes (arq tries ``RedisSettings.conn_retries`` times and
  exits), serving /health_check and /ready (503) meanwhile through ``before_connect``;
- a job whose payload is not JSON of this version (shared/job_json.py: pickled by an older version, or
  garbage) is dropped without a kept result, so the id it held is free at once, and a scheduled import's
  id also leaves the scheduler's ledger, so the scheduler's catch-up can enqueue it again.

Run it with ``conduit importer``; the plain ``arq`` command runs arq's own ``Worker`` (no class setting).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable
from signal import Signals
from typing import Any

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.typing import StartupShutdown
from arq.worker import Worker
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from shared.job_json import CODEC, PayloadRefused, create_pool, is_refusal, loads
from shared.logging import get_logger
from shared.redis_keys import scheduler_imports

log = get_logger(__name__)
REDIS_AWAY = (RedisError, OSError)
# 0.1 s, 0.2 s, ... 2 s: quick after a blip, at most 2 s late after a long outage.
PAUSES = ExponentialBackoff(cap=2.0, base=0.05)
# The id the scheduler gives a day's import (shared/jobs.py import_job_id), the date last.
_SCHEDULED_IMPORT = re.compile(r"import:[^:]+:[^:]+:(\d{4}-\d{2}-\d{2})")


class OutageTolerantWorker(Worker):
    """arq's worker, waiting for Redis where arq would exit (see the module docstring)."""

    def __init__(self, *args: Any, before_connect: StartupShutdown | None = None, **kwargs: Any) -> None:
        for name, value in CODEC.items():
            if kwargs.get(name) is None:
                kwargs[name] = value
        super().__init__(*args, **kwargs)
        self._before_connect = before_connect
        self._poll_failures = 0
        self._down_since = 0.0
        self._stopping = False
        self._writes: set[asyncio.Task[Any]] = set()

    async def main(self) -> None:
        if self._before_connect is not None:
            await self._before_connect(self.ctx)
        await self._connect()
        await super().main()

    async def _connect(self) -> None:
        """The first connection, waited for as long as Redis takes to come (a pod may start mid-outage)."""
        if self._pool is not None or self.redis_settings is None:
            return
        # One try per round: arq's own retries would log each and sleep a fixed second between them.
        settings = dataclasses.replace(self.redis_settings, conn_retries=0)
        failures = 0
        while self._pool is None:
            try:
                self._pool = await create_pool(
                    settings,
                    default_queue_name=self.queue_name,
                    expires_extra_ms=self.expires_extra_ms,
                )
            except REDIS_AWAY as exc:
                failures += 1
                if failures == 1:
                    log.error("redis unavailable at start; the worker waits for it", error=_name(exc))
                await asyncio.sleep(PAUSES.compute(failures))
        if failures:
            log.info("redis reachable; the worker starts", tries=failures + 1)

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_AWAY as exc:
            self._poll_failures += 1
            pause = PAUSES.compute(self._poll_failures)
            if self._poll_failures == 1:
                self._down_since = time.monotonic()
                log.error("redis unavailable; the worker waits for it", error=_name(exc), retry_in=pause)
            await asyncio.sleep(pause)
        else:
            if self._poll_failures:
                log.info("redis reachable again", seconds_away=round(time.monotonic() - self._down_since, 1))
                self._poll_failures = 0
                # The health key may have expired meanwhile; write it now, not an interval later.
                self._last_health_check = 0

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        try:
            await super().start_jobs(job_ids)
        except REDIS_AWAY:
            # arq counted the job it was starting (counter and semaphore) before the Redis call that
            # failed, and only frees both when a job task ends: give them back, or the slot is lost.
            self.job_counter -= 1
            self.sem.release()
            raise

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            await super().run_job(job_id, score)
        except REDIS_AWAY as exc:
            # The outcome writes below wait for Redis, so this is arq reading the job before running it:
            # the job did not run. Hand it back now (delete its in-progress key, arq's own way).
            log.warning("redis unavailable as a job started; handing it back", job_id=job_id, error=_name(exc))
            await self.finish_job(job_id, False, None, None, False, None, None)

    async def finish_job(self, job_id: str, *args: Any, **kwargs: Any) -> None:
        parent = super().finish_job
        await self._until_written(job_id, lambda: parent(job_id, *args, **kwargs))

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        if _refused(result_data):
            scheduled = _SCHEDULED_IMPORT.fullmatch(job_id)
            log.error(
                "job refused: its payload is not a JSON job of this version; dropped without running",
                job_id=job_id,
                scheduler_may_enqueue_again=scheduled is not None or job_id.startswith("refresh:"),
            )
            await self._until_written(job_id, lambda: self._drop(job_id, scheduled and scheduled.group(1)))
            return
        parent = super().finish_failed_job
        await self._until_written(job_id, lambda: parent(job_id, result_data))

    async def _drop(self, job_id: str, export_date: str | None) -> None:
        """arq's finish_failed_job without the kept result, which would hold the id (and its ledger entry)."""
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(retry_key_prefix + job_id, in_progress_key_prefix + job_id, job_key_prefix + job_id)
            tr.zrem(abort_jobs_ss, job_id)
            tr.zrem(self.queue_name, job_id)
            if export_date is not None:
                tr.srem(scheduler_imports(export_date), job_id)
            await tr.execute()

    async def _until_written(self, job_id: str, write: Callable[[], Awaitable[None]]) -> None:
        # arq's outcome writes are one MULTI/EXEC of deletes, ZREMs and SETs: writing again is harmless.
        # arq shields them, so this runs in a task of its own, which close() waits for.
        this = asyncio.current_task()
        if this is not None:
            self._writes.add(this)
            this.add_done_callback(self._writes.discard)
        failures = 0
        while True:
            try:
                await write()
            except REDIS_AWAY as exc:
                if self._stopping:
                    log.warning("stopping with a job's outcome unwritten", job_id=job_id, error=_name(exc))
                    return
                failures += 1
                if failures == 1:
                    log.warning("cannot write a job's outcome; waiting for redis", job_id=job_id, error=_name(exc))
                await asyncio.sleep(PAUSES.compute(failures))
            else:
                if failures:
                    log.info("job outcome written after redis came back", job_id=job_id)
                return

    def handle_sig(self, signum: Signals) -> None:
        self._stopping = True
        super().handle_sig(signum)

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        self._stopping = True
        super().handle_sig_wait_for_completion(signum)

    async def close(self) -> None:
        if self._pool is None:
            # Stopped before Redis ever answered: arq's close() would skip on_shutdown, and the ops server
            # started by before_connect would be left open.
            if self.on_shutdown:
                await self.on_shutdown(self.ctx)
            return
        if self._stopping:
            # A stop during an outage cancels job tasks that wait for their outcome to be written: let those
            # writes make their last try, and drop the cancelled tasks, which arq's close() gathers without
            # return_exceptions (it would stop there, before on_shutdown).
            await asyncio.gather(*self._writes, *self.tasks.values(), return_exceptions=True)
            self.tasks = {job_id: task for job_id, task in self.tasks.items() if not task.cancelled()}
        try:
            await super().close()
        except REDIS_AWAY as exc:
            # arq deletes its health key before on_shutdown; with Redis away that fails, and the
            # database pool and the ops server must still be closed.
            log.warning("stopping while redis is unavailable", error=_name(exc))
            if self.on_shutdown:
                await self.on_shutdown(self.ctx)
            await self.pool.aclose(close_connection_pool=True)
            self._pool = None


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def _refused(result_data: bytes | None) -> bool:
    """Whether arq is failing a job because shared/job_json.py refused its payload."""
    if result_data is None:
        return False
    try:
        return is_refusal(loads(result_data))
    except PayloadRefused:
        return False
