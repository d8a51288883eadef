"""Which imports are due at a given moment, and when each should start.

The planner is pure: it keeps fire times in memory (recomputed only when a
schedule next fires) and remembers which fires were fully enqueued, so a tick
in steady state costs one comparison per distinct schedule, not one per job.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from shared.jobs import import_job_id
from shared.schedules import Entry, Fire, Schedule

# How far ahead fire times are computed at once; a daily schedule always has a
# next fire within it, and a rarer one is simply recomputed at the horizon.
_HORIZON = 2 * 86400.0
# Even with no spread window, a fire's jobs are staggered over this many seconds. Jobs with
# equal scores leave arq's queue in id order, one tenant's 50 modules in a row, and the
# workers would then spend their turns on imports the tenant limit sends back.
MIN_SPREAD = 1.0


@dataclass(frozen=True, slots=True)
class PlannedImport:
    """One import job: what it imports, when its schedule fired and when it should start."""

    tenant: str
    module: str
    export_date: str
    job_id: str
    fire_at: float
    run_at: float


def spread_offset(tenant: str, module: str, spread: float) -> float:
    """A stable place in the spread window for this (tenant, module): the same every day and on every replica."""
    digest = hashlib.blake2b(f"{tenant}\0{module}".encode(), digest_size=8).digest()
    return max(spread, MIN_SPREAD) * int.from_bytes(digest) / 2**64


def plan_fire(schedule: Schedule, fire: Fire, entries: list[Entry], now: float) -> list[PlannedImport]:
    """The jobs of one fire. A job whose slot already passed (a catch-up) is spread again from ``now``."""
    planned = []
    for entry in entries:
        offset = spread_offset(entry.tenant, entry.module, schedule.spread)
        slot = fire.at + offset
        run_at = slot if slot > now else now + offset
        job_id = import_job_id(entry.tenant, entry.module, fire.export_date)
        planned.append(PlannedImport(entry.tenant, entry.module, fire.export_date, job_id, fire.at, run_at))
    return planned


@dataclass
class _FireCache:
    computed_at: float
    next_at: float
    fires: list[Fire]


@dataclass
class ImportPlanner:
    """Tracks every schedule's fires within the catch-up window and which of them are done."""

    groups: dict[Schedule, list[Entry]]
    catch_up: float
    _cache: dict[Schedule, _FireCache] = field(default_factory=dict)
    _done: set[tuple[Schedule, float]] = field(default_factory=set)

    def pending(self, now: float) -> list[tuple[Schedule, Fire]]:
        """Fires in ``(now - catch_up, now]`` not yet marked done, earliest first."""
        after = now - self.catch_up
        due = []
        for schedule in self.groups:
            for fire in self._fires(schedule, now):
                if fire.at > after and (schedule, fire.at) not in self._done:
                    due.append((schedule, fire))
        self._done = {key for key in self._done if key[1] > after}
        return sorted(due, key=lambda item: item[1].at)

    def mark_done(self, schedule: Schedule, fire: Fire) -> None:
        """Every job of this fire is in Redis's ledger: no need to look at it again in this process."""
        self._done.add((schedule, fire.at))

    def _fires(self, schedule: Schedule, now: float) -> list[Fire]:
        cached = self._cache.get(schedule)
        if cached is None or not cached.computed_at <= now < cached.next_at:
            upcoming = schedule.fires(now - self.catch_up, now + _HORIZON)
            past = [f for f in upcoming if f.at <= now]
            later = [f.at for f in upcoming if f.at > now]
            cached = _FireCache(now, later[0] if later else now + _HORIZON, past)
            self._cache[schedule] = cached
        return cached.fires
