"""The live board's counts against the ledger: a seed and the events after it count each run once."""

from __future__ import annotations

import datetime as dt

from redis.asyncio import Redis

from services.console.board import Board
from shared.job_json import JsonArqRedis
from tests.console.test_console_http import add_run
from tests.importer.conftest import Database


def finished(run_id: int, status: str) -> dict[str, object]:
    return {"topic": "import", "event": "finished", "run_id": run_id, "tenant": "acme", "module": "users",
            "status": status}  # fmt: skip


async def test_a_run_the_seed_counted_is_not_counted_again_by_its_late_event(
    db: Database, redis: Redis, redis_url: str
) -> None:
    # The board subscribes, then seeds from the ledger: a run that finished in between is in the ledger
    # and its "finished" event arrives after the seed.
    seen = await add_run(db, status="failed", finished_at=dt.datetime.now(dt.UTC))
    arq = JsonArqRedis.from_url(redis_url)
    try:
        board = Board()
        await board.seed(db.pool, arq)
        assert board.cell("acme", "users").failed == 1
        board.apply(finished(seen, "failed"))
        assert board.cell("acme", "users").failed == 1
        # A run the seed did not see counts, and so does any later event of the seen one's cell.
        board.apply(finished(seen + 1, "failed"))
        board.apply(finished(seen + 2, "succeeded"))
        assert (board.cell("acme", "users").failed, board.cell("acme", "users").done) == (2, 1)
    finally:
        await arq.aclose()
