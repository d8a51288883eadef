"""Enqueueing imports exactly once, however many schedulers run and however often they retry.

arq's own ``enqueue_job`` refuses an id only while the job is queued, running
or its result is kept; once the result expires, the same id would run again.
So each import is enqueued by one Lua script that, atomically, checks a ledger
of ids this day's schedule already enqueued (a Redis set per export date),
then writes the job exactly as arq's ``enqueue_job`` does (job key and queue
entry, unless arq already has the id) and records the id in the ledger.

Atomic per job and idempotent per batch: a scheduler that dies, or loses Redis
mid-batch, or never hears the reply, simply runs the batch again.
"""

from __future__ import annotations

from collections.abc import Sequence

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job

from services.scheduler.import_plan import PlannedImport
from shared import job_json, pauses
from shared.jobs import IMPORT_EXPORT
from shared.redis_keys import SCHEDULES_PAUSED, scheduler_imports

# Per job: KEYS job key, result key, ledger key; ARGV id, score (ms), job key ttl (ms), payload, tenant,
# tenant/module. The last key is the set of paused schedules: a paused job is neither queued nor put in the
# ledger (it stays pending), and comes back in the second list so the caller keeps its fire pending.
_ENQUEUE_ONCE = """
local ttl = tonumber(ARGV[1])
local paused = KEYS[#KEYS]
local enqueued, held = {}, {}
for i = 0, (#KEYS - 2) / 3 - 1 do
  local job_key, result_key, ledger = KEYS[2 + i * 3], KEYS[3 + i * 3], KEYS[4 + i * 3]
  local id = ARGV[2 + i * 6]
  if redis.call('SISMEMBER', paused, ARGV[6 + i * 6]) == 1 or redis.call('SISMEMBER', paused, ARGV[7 + i * 6]) == 1 then
    held[#held + 1] = id
  elseif redis.call('SISMEMBER', ledger, id) == 0 then
    if redis.call('EXISTS', job_key, result_key) == 0 then
      redis.call('SET', job_key, ARGV[5 + i * 6], 'PX', ARGV[4 + i * 6])
      redis.call('ZADD', KEYS[1], ARGV[3 + i * 6], id)
      enqueued[#enqueued + 1] = id
    end
    redis.call('SADD', ledger, id)
    redis.call('EXPIRE', ledger, ttl)
  end
end
return {enqueued, held}
"""

# One script call blocks Redis for about a millisecond per hundred jobs.
BATCH = 250


def ledger_key(export_date: str) -> str:
    """The set of import job ids the schedule enqueued for one export date."""
    return scheduler_imports(export_date)


class ImportEnqueuer:
    """Writes planned imports into arq's queue, each once."""

    def __init__(self, redis: ArqRedis, ledger_ttl: float) -> None:
        self.redis = redis
        self.ledger_ttl = int(ledger_ttl)
        self._script = redis.register_script(_ENQUEUE_ONCE)

    async def enqueue(self, jobs: Sequence[PlannedImport], now: float) -> list[str]:
        """Enqueue the jobs not in the ledger yet; returns the ids this call added to the queue."""
        return (await self.enqueue_unless_paused(jobs, now))[0]

    async def enqueue_unless_paused(self, jobs: Sequence[PlannedImport], now: float) -> tuple[list[str], list[str]]:
        """Like ``enqueue``; also returns the ids held back because their schedule is paused (shared/pauses.py)."""
        added: list[str] = []
        held: list[str] = []
        for start in range(0, len(jobs), BATCH):
            batch_added, batch_held = await self._batch(jobs[start : start + BATCH], now)
            added.extend(batch_added)
            held.extend(batch_held)
        return added, held

    async def _batch(self, jobs: Sequence[PlannedImport], now: float) -> tuple[list[str], list[str]]:
        now_ms = int(now * 1000)
        keys: list[str] = [self.redis.default_queue_name]
        args: list[str | int | bytes] = [self.ledger_ttl]
        for job in jobs:
            score = max(int(job.run_at * 1000), now_ms)
            payload = serialize_job(
                IMPORT_EXPORT,
                (job.tenant, job.module, job.export_date),
                {},
                None,
                now_ms,
                serializer=job_json.dumps,
            )
            keys += [job_key_prefix + job.job_id, result_key_prefix + job.job_id, ledger_key(job.export_date)]
            args += [job.job_id, score, score - now_ms + self.redis.expires_extra_ms, payload]
            args += [pauses.member(job.tenant), pauses.member(job.tenant, job.module)]
        added, held = await self._script(keys=[*keys, SCHEDULES_PAUSED], args=args)
        return _ids(added), _ids(held)


def _ids(raw: list[bytes | str]) -> list[str]:
    return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]


async def in_ledger(redis: ArqRedis, job_ids_by_date: dict[str, list[str]]) -> set[str]:
    """Which of these import job ids the schedulers already enqueued (for ``conduit scheduler plan``)."""
    found: set[str] = set()
    for export_date, ids in job_ids_by_date.items():
        flags = await redis.smismember(ledger_key(export_date), ids)  # type: ignore[misc]
        found.update(i for i, flag in zip(ids, flags, strict=True) if flag)
    return found
