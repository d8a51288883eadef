"""The token refresh job: the scheduler enqueues it at half a token's life, any worker runs it."""

from __future__ import annotations

from typing import Any

from arq.worker import Retry
from redis.exceptions import RedisError

from shared.logging import get_logger
from shared.refresh import RefreshBlocked, Refresher, RefreshFailed

log = get_logger(__name__)
# arq writes the retry once Redis answers again, so a short pause is enough.
REDIS_RETRY_DEFER = 1.0
# Tries of one refresh job: each Redis outage it meets costs one.
REFRESH_MAX_TRIES = 5


async def refresh_token(ctx: dict[str, Any], tenant: str, provider: str, force: bool = False) -> str:
    """Refresh one pair if it is due (or now, when an operator asks with ``force``); returns what happened.

    A failure is recorded on the token (backoff included) and moves the pair's
    place in the schedule, so the job itself never raises for it: arq retries
    would bypass the backoff. Redis away is the exception: nothing could be
    recorded, and a failed job would keep its id (which the scheduler enqueues
    again) for ``keep_result``, so the job steps back and runs once Redis is back.
    """
    refresher: Refresher = ctx["refresher"]
    if not refresher.tenants.has(tenant, provider):
        log.warning("refresh job for a pair not in the tenants file", tenant=tenant, provider=provider)
        return "unknown"
    try:
        record = await refresher.refresh(
            tenant, provider, trigger="operator" if force else "scheduled", force=force, wait=False
        )
    except RefreshBlocked:
        return "backing_off"
    except RefreshFailed as exc:
        return f"failed: {exc.error.reason}"
    except (RedisError, OSError) as exc:
        error = type(exc).__name__
        log.warning("redis unavailable; refresh will run again", tenant=tenant, provider=provider, error=error)
        raise Retry(defer=REDIS_RETRY_DEFER) from None
    return f"generation {record.generation}" if record is not None else "none"
