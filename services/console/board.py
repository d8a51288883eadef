"""The live board: per tenant and module, what is queued, running, done and failed today.

State is kept in memory, seeded from the ledger and arq's queue at start and
after every reconnect, then moved by the events every service emits
(``shared.events``). Rendering is coalesced: at most one render per push
interval, whatever the event rate, and the same bytes go to every connected
browser (SSE), so 500 events/s to 50 browsers costs a few renders a second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from arq.connections import ArqRedis
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from shared import redis_keys
from shared.db import UNAVAILABLE
from shared.logging import get_logger

log = get_logger(__name__)
EVENTS_SEEN = Counter("conduit_console_events_total", "Events the console's board received.", ["topic"])
SSE_CLIENTS = Gauge("conduit_console_sse_clients", "Browsers connected to the live board.")
# The busiest pairs only: every push carries the whole table to every browser (about 0.6 KB a row).
_SHOWN = 100
_LOST: tuple[type[BaseException], ...] = (RedisError, OSError, *UNAVAILABLE)


@dataclass
class Cell:
    tenant: str
    module: str
    queued: dict[str, float] = field(default_factory=dict)
    running: dict[int, dict[str, Any]] = field(default_factory=dict)
    done: int = 0
    failed: int = 0
    last: str = ""

    @property
    def busy(self) -> tuple[int, int, int, int]:
        return (-len(self.running), -self.failed, -len(self.queued), -self.done)


class Board:
    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], Cell] = {}
        self.finished: deque[float] = deque()
        self.recent: deque[dict[str, Any]] = deque(maxlen=15)
        self.day = dt.datetime.now(dt.UTC).date()
        self.version = 0
        self.connected = False
        # Runs the last seed already counted as finished: their "finished" event, published between the
        # subscription and the seed's query and delivered after it, must not count them again.
        self.counted: set[int] = set()
        self.clients: set[asyncio.Queue[bytes | None]] = set()

    def cell(self, tenant: str, module: str) -> Cell:
        key = (tenant, module)
        if key not in self.cells:
            self.cells[key] = Cell(tenant, module)
        return self.cells[key]

    def apply(self, event: dict[str, Any]) -> None:
        topic, kind = str(event.get("topic", "")), str(event.get("event", ""))
        EVENTS_SEEN.labels(topic if topic in ("job", "import", "token", "schedule") else "other").inc()
        self._roll_day()
        tenant, module = str(event.get("tenant", "")), str(event.get("module", ""))
        if topic == "job" and tenant and module:
            self._job(self.cell(tenant, module), kind, event)
        elif topic == "import" and tenant and module:
            self._import(self.cell(tenant, module), kind, event)
        elif topic in ("token", "schedule"):
            self.recent.appendleft({**event, "topic": topic, "event": kind})
        else:
            return
        self.version += 1

    def _job(self, cell: Cell, kind: str, event: dict[str, Any]) -> None:
        job_id = str(event.get("job_id", ""))
        if kind == "queued":
            # When it is due: the scheduler spreads a fire's imports (run_at), a re-run is due at once.
            cell.queued[job_id] = float(event.get("run_at") or event.get("at") or time.time())
        elif kind == "cancelled":
            cell.queued.pop(job_id, None)

    def _import(self, cell: Cell, kind: str, event: dict[str, Any]) -> None:
        run_id = int(event.get("run_id", 0))
        if kind == "started":
            cell.queued.pop(str(event.get("job_id", "")), None)
            cell.running[run_id] = {
                "run_id": run_id,
                "export_date": event.get("export_date"),
                "rows": 0,
                "stage": "",
                "started": float(event.get("at", time.time())),
                "job_id": event.get("job_id"),
            }
        elif kind == "progress" and run_id in cell.running:
            cell.running[run_id]["rows"] = int(event.get("rows", 0))
        elif kind == "stage" and run_id in cell.running:
            cell.running[run_id]["stage"] = str(event.get("stage", ""))[:40]
        elif kind == "finished":
            cell.running.pop(run_id, None)
            cell.queued.pop(str(event.get("job_id", "")), None)
            status = str(event.get("status", ""))
            cell.last = status
            if run_id in self.counted:
                self.counted.discard(run_id)
                return
            if status == "failed":
                cell.failed += 1
            else:
                cell.done += 1
            self.finished.append(float(event.get("at", time.time())))

    def _roll_day(self) -> None:
        today = dt.datetime.now(dt.UTC).date()
        if today != self.day:
            self.day = today
            for cell in self.cells.values():
                cell.done = cell.failed = 0

    def view(self) -> dict[str, Any]:
        """What the template shows: totals, the rate, the busiest cells first."""
        now = time.time()
        while self.finished and self.finished[0] < now - 60:
            self.finished.popleft()
        cells = sorted((c for c in self.cells.values() if c.queued or c.running or c.done or c.failed),
                       key=lambda c: (c.busy, c.tenant, c.module))  # fmt: skip
        return {
            "queued": sum(len(c.queued) for c in cells),
            "later": sum(1 for c in cells for due in c.queued.values() if due > now),
            "running": sum(len(c.running) for c in cells),
            "done": sum(c.done for c in cells),
            "failed": sum(c.failed for c in cells),
            "per_minute": len(self.finished),
            "cells": cells[:_SHOWN],
            "hidden": max(len(cells) - _SHOWN, 0),
            "recent": list(self.recent),
            "connected": self.connected,
            "now": now,
        }

    async def seed(self, pool: asyncpg.Pool, redis: ArqRedis) -> None:
        """Start again from what the ledger and the queue say now (events missed while away are in them)."""
        self.cells.clear()
        since = dt.datetime.combine(self.day, dt.time(), dt.UTC)
        # One snapshot for the three reads, so a run finishing meanwhile is in all of them or in none.
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            active = await conn.fetch(
                "SELECT id, tenant_id, module, export_date, job_id, status, rows_read, started_at "
                "FROM import_runs WHERE status IN ('queued', 'running')"
            )
            today = await conn.fetch(
                "SELECT tenant_id, module, count(*) FILTER (WHERE status = 'failed') AS failed, "
                "count(*) FILTER (WHERE status <> 'failed') AS done FROM import_runs "
                "WHERE finished_at >= $1 GROUP BY tenant_id, module",
                since,
            )
            # Subscribed first, then seeded: an event of these may still be on its way (a minute is ample).
            recent = await conn.fetch(
                "SELECT id FROM import_runs WHERE finished_at >= greatest($1, clock_timestamp() - interval '1 minute')",
                since,
            )
        self.counted = {row["id"] for row in recent}
        for row in today:
            cell = self.cell(row["tenant_id"], row["module"])
            cell.done, cell.failed = row["done"], row["failed"]
        for row in active:
            cell = self.cell(row["tenant_id"], row["module"])
            if row["status"] == "running":
                started = row["started_at"].timestamp() if row["started_at"] else time.time()
                cell.running[row["id"]] = {
                    "run_id": row["id"], "export_date": row["export_date"].isoformat(),
                    "rows": row["rows_read"], "stage": "", "started": started, "job_id": row["job_id"],
                }  # fmt: skip
            elif row["job_id"]:
                cell.queued[row["job_id"]] = time.time()
        await self._seed_queue(redis)
        self.version += 1

    async def _seed_queue(self, redis: ArqRedis) -> None:
        entries = await redis.zrange(redis.default_queue_name, 0, -1, withscores=True)
        for raw, score in entries:
            job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            parts = job_id.split(":")
            if len(parts) >= 4 and parts[0] == "import":
                cell = self.cell(parts[1], parts[2])
                if not any(r.get("job_id") == job_id for r in cell.running.values()):
                    cell.queued.setdefault(job_id, score / 1000)

    # --- pushing to browsers ---------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self.clients.add(queue)
        SSE_CLIENTS.set(len(self.clients))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self.clients.discard(queue)
        SSE_CLIENTS.set(len(self.clients))

    def broadcast(self, frame: bytes | None) -> None:
        """The newest frame replaces one a slow browser has not taken yet: it only ever needs the latest."""
        for queue in list(self.clients):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(frame)


def sse_frame(event: str, html: str) -> bytes:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {event}\n{data}\n".encode()


async def pusher(board: Board, render: Callable[[dict[str, Any]], str], interval: float) -> None:
    """Render and send the board whenever it changed, at most once per ``interval``."""
    sent = -1
    while True:
        await asyncio.sleep(interval)
        if board.version != sent and board.clients:
            sent = board.version
            try:
                board.broadcast(sse_frame("board", render(board.view())))
            except Exception:  # a template bug must not stop the board for good: log it, push the next change
                log.exception("console could not render the board")


def _apply(board: Board, data: bytes) -> None:
    try:
        event = orjson.loads(data)
        if isinstance(event, dict):
            board.apply(event)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        log.warning("console ignored a malformed event")


async def listener(board: Board, pool: asyncpg.Pool, redis: ArqRedis, retry_max: float = 5.0) -> None:
    """Follow the events channel for ever; after Redis comes back, seed again and go on."""
    delay = 0.2
    while True:
        # The pubsub connection must not time out while the channel is quiet: its own client, keepalive only.
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(redis_keys.events(redis))
            await board.seed(pool, redis)
            board.connected, delay = True, 0.2
            log.info("console following events")
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    _apply(board, message["data"])
        except _LOST as exc:
            if board.connected:
                log.warning("console lost the events; reconnecting", error=type(exc).__name__)
            board.connected = False
            board.version += 1
        finally:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (RedisError, OSError):
                pass
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)
