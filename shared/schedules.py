"""When each tenant's modules are imported: schedules resolved from the tenants file, and their fire times.

A schedule is a cron expression read on the wall clock of a time zone. Fire
times are found by walking the *wall clock* (naive local times) with croniter
and only then placing each on the time line, so a daylight-saving change can
neither skip a day nor run one twice:

- spring forward: a wall time in the gap (02:30 when clocks jump 02:00 -> 03:00)
  fires once, shifted forward by the gap (03:30 new time);
- fall back: a wall time that happens twice (01:30) fires once, at its first
  occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from croniter import croniter

from shared.tenants import DEFAULT_IMPORT_CRON, DEFAULT_IMPORT_TIMEZONE, ConfigError, TenantsConfig

# Wider than any daylight-saving shift (the largest in use is 2 h), so walking
# the wall clock over a widened window never misses a fire near a transition.
_WALL_MARGIN = timedelta(hours=3)


@dataclass(frozen=True, slots=True)
class Fire:
    """One firing of a schedule: the wall time it was written for and the instant it happens."""

    at: float  # unix seconds
    local: datetime  # naive wall time in the schedule's zone

    @property
    def export_date(self) -> str:
        """The export a fire imports: the tenant's previous calendar day, complete by then."""
        return (self.local.date() - timedelta(days=1)).isoformat()


@dataclass(frozen=True)
class Schedule:
    """A cron expression in a time zone, and the window over which its imports are spread."""

    cron: str
    timezone: str
    spread: float

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def fires(self, after: float, until: float) -> list[Fire]:
        """Every fire in ``(after, until]``, earliest first, each wall time once."""
        start = _wall(after, self.zone) - _WALL_MARGIN
        end = _wall(until, self.zone) + _WALL_MARGIN
        found: dict[float, Fire] = {}
        walk = croniter(self.cron, start)
        while (wall := walk.get_next(datetime)) <= end:
            # fold=0: the first of two identical wall times; in a gap, the offset from before it.
            at = wall.replace(tzinfo=self.zone, fold=0).timestamp()
            if after < at <= until and at not in found:
                found[at] = Fire(at, wall)
        return sorted(found.values(), key=lambda f: f.at)

    def fires_on(self, day: date) -> list[Fire]:
        """The fires whose wall time falls on ``day`` in the schedule's zone."""
        midnight = datetime.combine(day, datetime.min.time())
        after = midnight.replace(tzinfo=self.zone).timestamp() - _WALL_MARGIN.total_seconds()
        until = (midnight + timedelta(days=1)).replace(tzinfo=self.zone).timestamp() + _WALL_MARGIN.total_seconds()
        return [f for f in self.fires(after, until) if f.local.date() == day]


def _wall(at: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(at, UTC).astimezone(zone).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Entry:
    tenant: str
    module: str


def import_entries(tenants: TenantsConfig, modules: Sequence[str]) -> dict[Schedule, list[Entry]]:
    """Every (tenant, module) imported daily, grouped by the schedule it follows.

    ``modules`` are the catalogue's module names; a tenants file naming any other
    module raises :class:`ConfigError` naming the tenant and the module.
    """
    _check_module_names(tenants, modules)
    groups: dict[Schedule, list[Entry]] = {}
    for tenant in tenants.tenants:
        for module in _modules_of(tenants, tenant, modules):
            groups.setdefault(schedule_of(tenants, tenant, module), []).append(Entry(tenant, module))
    return groups


def schedule_of(tenants: TenantsConfig, tenant: str, module: str) -> Schedule:
    """The module's own setting, else the tenant's, else the file's default, else 02:00 UTC."""
    own = tenants.tenants[tenant].imports
    layers = [own.modules[module].schedule if module in own.modules else None, own.schedule, tenants.imports.schedule]
    cron = next((s.cron for s in layers if s is not None and s.cron), DEFAULT_IMPORT_CRON)
    zone = next((s.timezone for s in layers if s is not None and s.timezone), DEFAULT_IMPORT_TIMEZONE)
    spread = own.spread if own.spread is not None else tenants.imports.spread
    return Schedule(cron, zone, spread)


def _modules_of(tenants: TenantsConfig, tenant: str, modules: Sequence[str]) -> list[str]:
    own = tenants.tenants[tenant].imports
    chosen = modules if own.include is None else [m for m in modules if m in own.include]
    return [m for m in chosen if m not in own.exclude]


def _check_module_names(tenants: TenantsConfig, modules: Sequence[str]) -> None:
    known = set(modules)
    problems: list[str] = []
    for name, tenant in tenants.tenants.items():
        own = tenant.imports
        for key, names in (("include", own.include or []), ("exclude", own.exclude), ("modules", own.modules)):
            problems.extend(
                f"  tenant {name!r}, module {m!r}, key 'imports.{key}': unknown module" for m in _unknown(names, known)
            )
    if problems:
        listing = ", ".join(sorted(known)) or "none"
        problems.append(f"  (known modules: {listing})")
        raise ConfigError("\n".join([f"{tenants.path}: invalid tenants file", *problems]))


def _unknown(names: Iterable[str], known: set[str]) -> list[str]:
    return [m for m in names if m not in known]
