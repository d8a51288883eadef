"""Schedules from the tenants file and their fire times (pure logic: no Redis)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
import yaml

from services.scheduler.import_plan import ImportPlanner, plan_fire, spread_offset
from shared.schedules import Entry, Schedule, import_entries, schedule_of
from shared.tenants import ConfigError, TenantsConfig, load_tenants
from tests.scheduler.support import MODULES, tenants_yaml, utc

Write = Callable[..., TenantsConfig]


def test_without_an_imports_section_every_module_imports_at_0200_utc(write_tenants: Write) -> None:
    tenants = write_tenants({"acme": None, "globex": None})
    groups = import_entries(tenants, MODULES)
    assert list(groups) == [Schedule("0 2 * * *", "UTC", 3600.0)]
    assert [(e.tenant, e.module) for e in groups[Schedule("0 2 * * *", "UTC", 3600.0)]] == [
        (t, m) for t in ("acme", "globex") for m in MODULES
    ]


def test_module_overrides_tenant_overrides_file_default(write_tenants: Write) -> None:
    tenants = write_tenants(
        {
            "acme": None,
            "shanghai": {
                "schedule": {"timezone": "Asia/Shanghai"},
                "spread": "30m",
                "modules": {"orders": {"schedule": {"cron": "15 4 * * *"}}},
            },
        },
        imports={"schedule": {"cron": "0 3 * * *", "timezone": "Europe/Paris"}, "spread": "1h30m"},
    )
    assert schedule_of(tenants, "acme", "orders") == Schedule("0 3 * * *", "Europe/Paris", 5400.0)
    assert schedule_of(tenants, "shanghai", "invoices") == Schedule("0 3 * * *", "Asia/Shanghai", 1800.0)
    assert schedule_of(tenants, "shanghai", "orders") == Schedule("15 4 * * *", "Asia/Shanghai", 1800.0)


def test_a_default_giving_only_a_zone_keeps_0200(write_tenants: Write) -> None:
    tenants = write_tenants({"acme": None}, imports={"schedule": {"timezone": "Asia/Tokyo"}})
    assert schedule_of(tenants, "acme", "orders") == Schedule("0 2 * * *", "Asia/Tokyo", 3600.0)


def test_include_and_exclude_choose_modules(write_tenants: Write) -> None:
    tenants = write_tenants({"few": {"include": ["orders", "invoices"]}, "most": {"exclude": ["orders"]}})
    chosen = {(e.tenant, e.module) for entries in import_entries(tenants, MODULES).values() for e in entries}
    assert chosen == {("few", "invoices"), ("few", "orders"), ("most", "customers"), ("most", "invoices")}


def test_unknown_module_names_are_refused_naming_tenant_and_module(write_tenants: Write) -> None:
    tenants = write_tenants({"acme": {"include": ["orders", "ordres"], "modules": {"invoice": {}}}})
    with pytest.raises(ConfigError) as err:
        import_entries(tenants, MODULES)
    message = str(err.value)
    assert str(tenants.path) in message
    assert "tenant 'acme', module 'ordres', key 'imports.include': unknown module" in message
    assert "tenant 'acme', module 'invoice', key 'imports.modules': unknown module" in message


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ({"cron": "61 2 * * *"}, "invalid cron expression '61 2 * * *'"),
        ({"cron": "0 2 * *"}, "must have 5 fields"),
        ({"cron": "0 0 2 * * *"}, "must have 5 fields"),
        ({"timezone": "Asia/Shangai"}, "unknown time zone 'Asia/Shangai'"),
        ({"timezone": "../../etc/passwd"}, "unknown time zone"),
    ],
)
def test_bad_cron_or_zone_names_file_tenant_and_module(tmp_path: Path, schedule: dict[str, str], expected: str) -> None:
    path = tmp_path / "tenants.yaml"
    data = tenants_yaml({"acme": {"modules": {"orders": {"schedule": schedule}}}})
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_tenants(path, resolve_secrets=False)
    message = str(err.value)
    assert str(path) in message and expected in message
    assert "tenant 'acme', module 'orders', key 'imports.modules.orders.schedule." in message


def test_bad_default_schedule_and_spread_are_named(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    data = tenants_yaml({"acme": {"spread": "soon"}}, imports={"schedule": {"cron": "@fortnightly"}})
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_tenants(path, resolve_secrets=False)
    assert "key 'imports.schedule.cron'" in str(err.value)
    assert "tenant 'acme', key 'imports.spread'" in str(err.value)


def test_a_daily_schedule_fires_once_a_day_in_its_zone() -> None:
    shanghai = Schedule("0 2 * * *", "Asia/Shanghai", 0)
    fires = shanghai.fires(utc(2026, 5, 1), utc(2026, 5, 4))
    # 02:00 in Shanghai (UTC+8) is 18:00 UTC the day before; it imports the export of the local day before.
    assert [f.at for f in fires] == [utc(2026, 5, 1, 18), utc(2026, 5, 2, 18), utc(2026, 5, 3, 18)]
    assert [f.export_date for f in fires] == ["2026-05-01", "2026-05-02", "2026-05-03"]


@pytest.mark.parametrize(
    ("zone", "cron", "day", "expected_utc"),
    [
        # Spring forward: 02:30 does not exist; it fires once, shifted by the gap to 03:30 new time.
        ("America/New_York", "30 2 * * *", date(2026, 3, 8), (2026, 3, 8, 7, 30)),
        ("Europe/London", "30 1 * * *", date(2026, 3, 29), (2026, 3, 29, 1, 30)),
        # Fall back: 01:30 happens twice; it fires once, at the first.
        ("America/New_York", "30 1 * * *", date(2026, 11, 1), (2026, 11, 1, 5, 30)),
        ("Europe/London", "30 1 * * *", date(2026, 10, 25), (2026, 10, 25, 0, 30)),
        # Lord Howe Island moves its clocks by 30 minutes.
        ("Australia/Lord_Howe", "15 2 * * *", date(2026, 10, 4), (2026, 10, 3, 15, 45)),
    ],
)
def test_on_the_day_the_clocks_change_a_daily_schedule_fires_once(
    zone: str, cron: str, day: date, expected_utc: tuple[int, ...]
) -> None:
    schedule = Schedule(cron, zone, 0)
    assert [f.at for f in schedule.fires_on(day)] == [utc(*expected_utc)]
    around = schedule.fires(
        utc(day.year, day.month, day.day) - 3 * 86400, utc(day.year, day.month, day.day) + 4 * 86400
    )
    assert len(around) == 7 and len({f.export_date for f in around}) == 7


def test_fires_do_not_depend_on_the_machine_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    schedule = Schedule("30 2 * * *", "America/New_York", 0)
    expected = [f.at for f in schedule.fires(utc(2026, 3, 6), utc(2026, 3, 10))]
    monkeypatch.setenv("TZ", "Australia/Sydney")
    time.tzset()
    try:
        assert [f.at for f in schedule.fires(utc(2026, 3, 6), utc(2026, 3, 10))] == expected
    finally:
        monkeypatch.undo()
        time.tzset()


def test_spread_offsets_are_stable_and_within_the_window() -> None:
    offsets = [spread_offset("acme", f"m{i}", 3600) for i in range(1000)]
    assert offsets == [spread_offset("acme", f"m{i}", 3600) for i in range(1000)]
    assert all(0 <= o < 3600 for o in offsets)
    # Spread, not clumped: every 6-minute slice of the hour gets some of the 1000.
    assert len({int(o // 360) for o in offsets}) == 10


def test_with_no_spread_window_a_fire_is_still_staggered_over_a_second_across_tenants() -> None:
    offsets = {(t, m): spread_offset(t, m, 0) for t in ("acme", "globex", "initech") for m in MODULES}
    assert all(0 <= o < 1 for o in offsets.values()) and len(set(offsets.values())) == len(offsets)
    first_six = [t for t, _ in sorted(offsets, key=lambda key: offsets[key])[:6]]
    assert len(set(first_six)) > 1  # not one tenant's modules in a row


def test_a_job_whose_slot_passed_is_spread_again_from_now() -> None:
    schedule = Schedule("0 2 * * *", "UTC", 3600)
    [fire] = schedule.fires_on(date(2026, 5, 1))
    entries = [Entry("acme", m) for m in MODULES]
    on_time = plan_fire(schedule, fire, entries, now=fire.at)
    assert [j.run_at - fire.at for j in on_time] == pytest.approx([spread_offset("acme", m, 3600) for m in MODULES])
    three_hours_late = fire.at + 3 * 3600
    late = plan_fire(schedule, fire, entries, now=three_hours_late)
    offsets = [spread_offset("acme", m, 3600) for m in MODULES]
    assert [j.run_at - three_hours_late for j in late] == pytest.approx(offsets)
    assert {j.job_id for j in late} == {f"import:acme:{m}:2026-04-30" for m in MODULES}


def test_the_planner_looks_back_only_over_the_catch_up_window() -> None:
    schedule = Schedule("0 2 * * *", "UTC", 0)
    planner = ImportPlanner({schedule: [Entry("acme", "orders")]}, catch_up=6 * 3600)
    assert planner.pending(utc(2026, 5, 1, 1, 59)) == []
    [(_, fire)] = planner.pending(utc(2026, 5, 1, 7, 59))
    assert fire.at == utc(2026, 5, 1, 2)
    assert planner.pending(utc(2026, 5, 1, 8, 1)) == []  # older than the window: left alone
    planner.mark_done(schedule, fire)
    [(_, fire)] = planner.pending(utc(2026, 5, 2, 2))
    planner.mark_done(schedule, fire)
    assert planner.pending(utc(2026, 5, 2, 2, 1)) == []
