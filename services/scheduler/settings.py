"""Settings of the scheduler (``CONDUIT_SCHEDULER_*`` and the common ``CONDUIT_*``)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class SchedulerSettings(CommonSettings):
    """How often the scheduler looks at the clock, how far ahead and how far back it enqueues."""

    scheduler_http_host: str = "0.0.0.0"
    scheduler_http_port: int = Field(default=8082, ge=0, le=65535)
    # Seconds between two looks at what is due.
    scheduler_tick: float = Field(default=0.25, gt=0)
    # Refreshes due this far ahead are enqueued now, deferred to their time. arq starts
    # jobs in the order of their time, so such a refresh waits behind every import
    # enqueued before it; at 0 a refresh is enqueued once due, ahead of all of them
    # (token_refresh.py), which the ticks' 0.25 s make on time enough.
    scheduler_refresh_lookahead: float = Field(default=0.0, ge=0)
    # An import whose schedule fired at most this many seconds ago and was never
    # enqueued (no scheduler was running) is enqueued when a scheduler starts. It is
    # also how far back every tick looks, hence at least a minute: a slow tick never misses a fire.
    scheduler_catch_up: float = Field(default=86400.0, ge=60)
    # Enqueued later than this after its schedule fired, an import counts as a missed run caught up.
    scheduler_late_after: float = Field(default=60.0, gt=0)
    # Longest wait between two attempts while Redis is unreachable: also how late, at most, the
    # scheduler notices that Redis is back.
    scheduler_retry_max: float = Field(default=2.0, gt=0)
