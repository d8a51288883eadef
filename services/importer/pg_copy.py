"""COPY that notices a lost connection.

asyncpg's COPY FROM waits for the socket to drain before it sends more; if
PostgreSQL goes away meanwhile (a restart, a failover) that wait is never woken
(asyncpg 0.32 wakes the query's waiter, not the writer), and the import would
hang until arq's job timeout turned a transient outage into a failed run. So
every COPY runs as a task that a termination listener cancels, and the cancel
becomes the ConnectionDoesNotExistError the rest of the importer retries on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")


async def until_lost(conn: asyncpg.Connection, operation: Awaitable[T]) -> T:
    """Await ``operation``; if ``conn`` is lost first, raise ConnectionDoesNotExistError instead of waiting on."""
    task = asyncio.ensure_future(operation)
    lost = False

    def on_lost(_: Any) -> None:
        nonlocal lost
        lost = True
        task.cancel()

    conn.add_termination_listener(on_lost)
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if lost and (current is None or not current.cancelling()):
            raise asyncpg.exceptions.ConnectionDoesNotExistError("the connection was lost during COPY") from None
        raise
    finally:
        conn.remove_termination_listener(on_lost)
