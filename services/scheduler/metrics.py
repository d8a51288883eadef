"""The scheduler's Prometheus metrics (served on /metrics of its ops port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_ENQUEUED = Counter(
    "conduit_scheduler_jobs_enqueued_total", "Jobs this scheduler enqueued (duplicates excluded), by kind.", ["kind"]
)
SCHEDULE_LAG = Histogram(
    "conduit_scheduler_schedule_lag_seconds",
    "Seconds between when work was due and when this scheduler enqueued it, by kind.",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600),
)
MISSED_RUNS_CAUGHT_UP = Counter(
    "conduit_scheduler_missed_runs_caught_up_total",
    "Jobs enqueued late because no scheduler was running when their schedule fired, by kind.",
    ["kind"],
)
REDIS_UP = Gauge("conduit_scheduler_redis_up", "1 if the scheduler's last tick reached Redis, else 0.")
LAST_TICK = Gauge("conduit_scheduler_last_tick_timestamp_seconds", "When the last successful tick ran (unix time).")
