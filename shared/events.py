"""Small events on Redis pub/sub for live views (the console's board): fire and forget.

Every service says what happened through :func:`emit`: a job queued, an import
started / progressing / finished, a token refreshed or failed, a schedule fired.
One channel per Redis database, ``conduit:db<N>:events``; each message is a JSON object with ``topic``,
``event``, ``at`` and the event's own fields (names, counts and short codes,
never a token or secret).

Publishing must never slow or break the work, whatever Redis or the console do:
``emit`` only puts the event in a bounded in-process buffer and returns; one
background task per client publishes from it, each publish bounded by a
timeout. A full buffer (Redis slow or away) drops the event and counts it.
Hand-written because redis-py has no non-blocking publish and arq's pool has no
buffer; it is about sixty lines.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

import orjson
from prometheus_client import Counter
from redis.asyncio import Redis

from shared import redis_keys
from shared.logging import get_logger

log = get_logger(__name__)

EVENTS_DROPPED = Counter(
    "conduit_events_dropped_total", "Live-view events not published (buffer full or Redis unreachable).", ["reason"]
)
BUFFER = 1000
PUBLISH_TIMEOUT = 0.5


class EventPublisher:
    """A bounded buffer and the task that empties it into Redis; made on first use per client and event loop."""

    def __init__(self, redis: Redis, buffer: int = BUFFER, timeout: float = PUBLISH_TIMEOUT) -> None:
        # Weak: the registry below is keyed by the client, and a strong reference here would keep it for ever.
        self._redis = weakref.ref(redis)
        self.timeout = timeout
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=buffer)
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(self._drain(), name="conduit-events")

    def emit(self, message: bytes) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            EVENTS_DROPPED.labels("buffer_full").inc()

    async def _drain(self) -> None:
        while True:
            _reraise_if_cancelled()
            message = await self.queue.get()
            redis = self._redis()
            if redis is None:
                return
            if not _connected(redis):
                EVENTS_DROPPED.labels("unreachable").inc()
                continue
            try:
                async with asyncio.timeout(self.timeout):
                    await redis.publish(redis_keys.events(redis), message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure only loses this event, never the work
                _reraise_if_cancelled()
                EVENTS_DROPPED.labels("unreachable").inc()
                log.debug("event not published", error=type(exc).__name__)

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until the buffer is empty; for tests and orderly shutdown."""
        deadline = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


def _connected(redis: Redis) -> bool:
    """Whether the owner's client holds a live connection. One it closed (at shutdown, at the end of a test)
    must not be reopened just to publish what was still buffered: nobody would close that connection.
    redis-py has no "closed" flag, hence its pool's lists (redis < 6 is pinned)."""
    pool = getattr(redis, "connection_pool", None)
    if pool is None:  # not a redis-py client (a test double)
        return True
    connections = [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]
    return any(getattr(c, "is_connected", False) for c in connections)


def _reraise_if_cancelled() -> None:
    # A cancel that lands during a publish can be swallowed on the way (redis-py returning normally, or
    # 3.11's asyncio.timeout turning it into TimeoutError); waiting for the next event after that would
    # leave the loop's shutdown waiting for ever (seen: `conduit tokens refresh` hung at exit).
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


_publishers: weakref.WeakKeyDictionary[Redis, EventPublisher] = weakref.WeakKeyDictionary()


def publisher(redis: Redis) -> EventPublisher | None:
    """The publisher of this client in the running loop (None outside one)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    found = _publishers.get(redis)
    if found is None or found.loop is not loop or found.task.done():
        found = _publishers[redis] = EventPublisher(redis)
    return found


def emit(redis: Redis | None, topic: str, event: str, **fields: Any) -> None:
    """Publish one event without waiting for it; never raises."""
    try:
        target = publisher(redis) if redis is not None else None
        if target is not None:
            target.emit(orjson.dumps({"topic": topic, "event": event, "at": time.time(), **fields}, default=str))
    except Exception as exc:  # noqa: BLE001 - an event must never break the work that emits it
        EVENTS_DROPPED.labels("error").inc()
        log.debug("event not emitted", error=type(exc).__name__)
