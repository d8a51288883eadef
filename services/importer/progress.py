"""Progress events on Redis pub/sub for live views: run started, every N rows, finished.

One channel for every import, ``conduit:imports:progress``; each message is a
JSON object naming the run, tenant, module and export date. Publishing is best
effort: a Redis hiccup never fails an import.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.importer.stats import RunStats
from shared.logging import get_logger

CHANNEL = "conduit:imports:progress"
log = get_logger(__name__)


class Progress:
    """The events of one run."""

    def __init__(self, redis: Redis, every_rows: int, **run: Any) -> None:
        self._redis = redis
        self._every = every_rows
        self._next = every_rows
        self._run = run

    async def publish(self, event: str, **fields: Any) -> None:
        message = orjson.dumps({"event": event, "at": time.time(), **self._run, **fields})
        try:
            await self._redis.publish(CHANNEL, message)
        except (RedisError, OSError) as exc:
            log.warning("cannot publish import progress", error=type(exc).__name__, **self._run)

    async def started(self, attempt: int) -> None:
        await self.publish("started", attempt=attempt)

    async def rows(self, staged: int) -> None:
        """Called after every chunk; publishes when another ``every_rows`` rows went in."""
        if staged >= self._next:
            self._next = (staged // self._every + 1) * self._every
            await self.publish("progress", rows=staged)

    async def finished(self, status: str, stats: RunStats, error: str | None = None) -> None:
        await self.publish(
            "finished",
            status=status,
            rows_read=stats.rows_read,
            rows_imported=stats.rows_imported if status in ("succeeded", "partially_rejected") else 0,
            rows_rejected=stats.rows_rejected,
            error=error,
        )
