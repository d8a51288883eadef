"""The import schedules: the ``imports:`` sections of the tenants file, and when each schedule fires.

Used by the scheduler (which enqueues the daily imports) and the console (which shows and pauses
them); the proxy and the importer never read a schedule. The tenants file is still one document:
``shared.tenants`` validates it whole and takes the ``imports:`` schema from here, so an error in a
schedule is reported like any other, naming the file, the tenant, the module and the key.

A schedule is a cron expression read on the wall clock of a time zone. Fire
times are found by walking the *wall clock* (naive local times) with croniter
and only then placing each on the time line, so a daylight-saving change can
neither skip a day nor run one twice:

- spring forward: a wall time in the gap (02:30 when clocks jump 02:00 -> 03:00)
  fires once, shifted forward by the gap (03:30 new time);
- fall back: a wall time that happens twice (01:30) fires once, at its first
  occurrence.

croniter is imported inside the functions that use it: every process loads this module with the
tenants file, and the proxy, which never reads a schedule, should not pay for croniter
(tests/proxy/test_proxy_imports.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from shared.config_errors import ConfigError

if TYPE_CHECKING:
    from shared.tenants import TenantsConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_cron(expr: str) -> str:
    from croniter import croniter  # not at the top: see the module docstring

    fields = expr.split()
    if not expr.startswith("@") and len(fields) != 5:
        raise ValueError(f"cron expression {expr!r} must have 5 fields (minute hour day month weekday)")
    if not croniter.is_valid(expr):
        raise ValueError(f"invalid cron expression {expr!r}")
    return expr


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)") from None
    return name


_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def _parse_duration(value: object) -> object:
    """``90``, ``"90s"``, ``"30m"``, ``"2h"`` or ``"1h30m"`` to seconds; anything else is left to pydantic."""
    if isinstance(value, str) and value and (match := _DURATION.match(value.strip())):
        return sum(int(n or 0) * unit for n, unit in zip(match.group("h", "m", "s"), (3600, 60, 1), strict=True))
    return value


Cron = Annotated[str, AfterValidator(_check_cron)]
TimeZone = Annotated[str, AfterValidator(_check_timezone)]
Seconds = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]

DEFAULT_IMPORT_CRON = "0 2 * * *"
DEFAULT_IMPORT_TIMEZONE = "UTC"
DEFAULT_IMPORT_SPREAD = 3600.0


class ScheduleSpec(_Strict):
    """When imports fire: a 5-field cron expression read in an IANA time zone. Unset fields are inherited."""

    cron: Cron | None = None
    timezone: TimeZone | None = None


class ModuleImports(_Strict):
    """One module's overrides within a tenant."""

    schedule: ScheduleSpec = ScheduleSpec()


class TenantImports(_Strict):
    """A tenant's import overrides: its schedule, spread window, which modules, per-module schedules."""

    schedule: ScheduleSpec = ScheduleSpec()
    spread: Seconds | None = None
    # None: every module of the catalogue.
    include: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    modules: dict[str, ModuleImports] = Field(default_factory=dict)


class ImportDefaults(_Strict):
    """The top-level ``imports:`` section: the schedule and spread window every tenant starts from."""

    # Not validated here: that would import croniter with this module, in every process, the proxy
    # too (see the module docstring); tests/shared/test_tenants.py validates these constants instead.
    schedule: ScheduleSpec = ScheduleSpec.model_construct(cron=DEFAULT_IMPORT_CRON, timezone=DEFAULT_IMPORT_TIMEZONE)
    # The day's imports start spread over this many seconds after the schedule fires.
    spread: Seconds = DEFAULT_IMPORT_SPREAD


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
        from croniter import croniter  # not at the top: see the module docstring

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
