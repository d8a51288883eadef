"""The scheduler's half of the daily cycle: every fired schedule's imports, enqueued once each."""

from __future__ import annotations

from arq.connections import ArqRedis

from services.scheduler.enqueue import ImportEnqueuer
from services.scheduler.import_plan import ImportPlanner, PlannedImport, plan_fire
from services.scheduler.metrics import JOBS_ENQUEUED, MISSED_RUNS_CAUGHT_UP, SCHEDULE_LAG
from shared import events
from shared.jobs import IMPORT_EXPORT
from shared.logging import get_logger
from shared.schedules import Entry, Schedule

log = get_logger(__name__)

# The ledger outlives the catch-up window by a day, so a fire is still
# recognised as done by the last tick that could consider it, in any time zone.
_LEDGER_MARGIN = 86400.0


class DailyImports:
    """Enqueues the imports of schedules that fired within the catch-up window and are not done yet."""

    def __init__(self, redis: ArqRedis, groups: dict[Schedule, list[Entry]], catch_up: float, late_after: float):
        self.redis = redis
        self.groups = groups
        self.planner = ImportPlanner(groups, catch_up)
        self.enqueuer = ImportEnqueuer(redis, catch_up + _LEDGER_MARGIN)
        self.late_after = late_after

    async def tick(self, now: float) -> int:
        """Enqueue what is due at ``now``; returns how many jobs this call added to the queue."""
        total = 0
        for schedule, fire in self.planner.pending(now):
            jobs = plan_fire(schedule, fire, self.groups[schedule], now)
            added, held = await self.enqueuer.enqueue_unless_paused(jobs, now)
            # A paused import stays pending: resumed within the catch-up window, it is enqueued then.
            if not held:
                self.planner.mark_done(schedule, fire)
            total += len(added)
            if added:
                self._record(fire.at, now, len(added), schedule)
                self._announce(jobs, set(added), fire.at)
        return total

    def _announce(self, jobs: list[PlannedImport], added: set[str], fire_at: float) -> None:
        events.emit(self.redis, "schedule", "fired", fire_at=fire_at, jobs=len(added))
        for job in jobs:
            if job.job_id in added:
                events.emit(self.redis, "job", "queued", job_id=job.job_id, tenant=job.tenant, module=job.module,
                            export_date=job.export_date, run_at=job.run_at)  # fmt: skip

    def _record(self, fire_at: float, now: float, added: int, schedule: Schedule) -> None:
        lag = max(now - fire_at, 0.0)
        JOBS_ENQUEUED.labels(IMPORT_EXPORT).inc(added)
        SCHEDULE_LAG.labels(IMPORT_EXPORT).observe(lag)
        late = lag > self.late_after
        if late:
            MISSED_RUNS_CAUGHT_UP.labels(IMPORT_EXPORT).inc(added)
        log.info(
            "imports enqueued",
            jobs=added,
            cron=schedule.cron,
            timezone=schedule.timezone,
            lag_seconds=round(lag, 3),
            caught_up=late,
        )
