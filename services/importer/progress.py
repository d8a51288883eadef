"""Progress events on Redis pub/sub for live views: run started, each stage it enters, every N rows, finished.

On the live-view channel every service shares (``shared.events``, topic
``import``); each message is a JSON object naming the run, job, tenant, module
and export date. Fire and forget: neither a slow nor a missing Redis ever
slows or fails an import.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from services.importer.stats import Outcome
from shared import events


class Progress:
    """The events of one run."""

    def __init__(self, redis: Redis, every_rows: int, **run: Any) -> None:
        self._redis = redis
        self._every = every_rows
        self._next = every_rows
        self._run = run

    async def publish(self, event: str, **fields: Any) -> None:
        events.emit(self._redis, "import", event, **self._run, **fields)

    async def started(self, attempt: int) -> None:
        await self.publish("started", attempt=attempt)

    async def stage(self, name: str) -> None:
        """The run enters a stage (download, copy, careful parse, merge, record)."""
        await self.publish("stage", stage=name)

    async def rows(self, staged: int) -> None:
        """Called after every chunk; publishes when another ``every_rows`` rows went in."""
        if staged >= self._next:
            self._next = (staged // self._every + 1) * self._every
            await self.publish("progress", rows=staged)

    async def finished(self, status: str, outcome: Outcome, error: str | None = None) -> None:
        await self.publish(
            "finished",
            status=status,
            rows_read=outcome.rows_read,
            rows_imported=outcome.rows_imported if status in ("succeeded", "partially_rejected") else 0,
            rows_rejected=outcome.rows_rejected,
            error=error,
        )
