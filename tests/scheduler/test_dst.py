"""The day the clocks change, through the scheduler's ticks against real Redis: each daily import runs once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta

import pytest
from arq.connections import ArqRedis

from services.scheduler.main import Scheduler
from shared.tenants import TenantsConfig
from tests.scheduler.support import SimulatedWorkers, utc

# Wall times in the hour that is skipped in spring and repeated in autumn, in both zones.
TENANTS = {
    "newyork": {
        "schedule": {"timezone": "America/New_York", "cron": "30 1 * * *"},
        "modules": {"orders": {"schedule": {"cron": "30 2 * * *"}}},
    },
    "london": {
        "schedule": {"timezone": "Europe/London", "cron": "30 1 * * *"},
        "modules": {"orders": {"schedule": {"cron": "0 1 * * *"}}},
    },
}


@pytest.mark.parametrize(
    ("tenant", "change_day", "invoices_at", "orders_at"),
    [
        # Spring forward, New York 02:00 -> 03:00: 01:30 is still EST; 02:30 does not exist, runs at 03:30 EDT.
        ("newyork", (2026, 3, 8), (2026, 3, 8, 6, 30), (2026, 3, 8, 7, 30)),
        # Spring forward, London 01:00 -> 02:00: both 01:00 and 01:30 are skipped and shifted an hour.
        ("london", (2026, 3, 29), (2026, 3, 29, 1, 30), (2026, 3, 29, 1, 0)),
        # Fall back, New York 02:00 -> 01:00: 01:30 happens twice, runs at the first (EDT); 02:30 is EST.
        ("newyork", (2026, 11, 1), (2026, 11, 1, 5, 30), (2026, 11, 1, 7, 30)),
        # Fall back, London 02:00 -> 01:00: 01:00 and 01:30 happen twice, run at the first (BST).
        ("london", (2026, 10, 25), (2026, 10, 25, 0, 30), (2026, 10, 25, 0, 0)),
    ],
    ids=["new-york-spring", "london-spring", "new-york-fall", "london-fall"],
)
async def test_each_import_runs_once_a_day_across_a_clock_change(
    write_tenants: Callable[..., TenantsConfig],
    make_scheduler: Callable[..., Scheduler],
    arq_redis: ArqRedis,
    tenant: str,
    change_day: tuple[int, int, int],
    invoices_at: tuple[int, ...],
    orders_at: tuple[int, ...],
) -> None:
    tenants = write_tenants({tenant: TENANTS[tenant]}, imports={"spread": 0})
    scheduler = make_scheduler(tenants, modules=["invoices", "orders"], scheduler_catch_up=3600)
    workers = SimulatedWorkers(arq_redis)
    start = utc(*change_day) - 2 * 86400
    now = start
    while now < start + 4 * 86400:
        await scheduler.imports.tick(now)
        await workers.run_due(now)
        now += 120

    runs = Counter((j.args[1], j.args[2]) for j in workers.ran)
    assert set(runs.values()) == {1}
    assert Counter(module for module, _ in runs) == {"invoices": 4, "orders": 4}
    day_before = (date(*change_day) - timedelta(days=1)).isoformat()
    on_the_day = {j.args[1]: j.enqueue_time.timestamp() for j in workers.ran if j.args[2] == day_before}
    assert utc(*invoices_at) <= on_the_day["invoices"] < utc(*invoices_at) + 120
    assert utc(*orders_at) <= on_the_day["orders"] < utc(*orders_at) + 120
