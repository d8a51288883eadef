"""Exact data: what was found at aff0668, run end to end by a real worker, and the guards behind the fixes.

- a ``\\.`` line made COPY stop reading, and ``missing_rows: delete`` then deleted the rows after it;
- a file with CR-only line ends lost its last record on the careful path;
- a run's ``finished_at`` was when its transaction began;
- past the reject threshold, ``rows_rejected`` stopped counting.

The guards: whatever a reader misses, a run whose rows do not add up to the
file's records takes the careful path or fails, and never deletes.
"""

from __future__ import annotations

import datetime as dt

import pytest

from services.importer import ledger
from services.importer.stats import RunStats
from tests.importer.conftest import Database, Importer
from tests.importer.support import Exports, export_body

HEAD = "code,name,decimals,symbol\n"
# 200 more rows, so that one rejected row stays under the module's threshold (1%).
MORE = "".join(f"X{i:03},Other {i},2,o\n" for i in range(200))
YESTERDAY = HEAD + "AUD,Dollar,2,$\nCHF,Franc,2,F\nEUR,Euro,2,E\nGBP,Pound,2,L\nUSD,Dollar,2,$\n" + MORE
CODES = ["AUD", "CHF", "EUR", "GBP", "USD"] + [f"X{i:03}" for i in range(200)]


async def _yesterday(importer: Importer, exports: Exports) -> None:
    exports.set("currencies", export_body("currencies", YESTERDAY))
    assert (await importer.run("acme", "currencies", "2024-05-01")).startswith("succeeded")


async def _codes(importer: Importer) -> list[str]:
    return [r["code"] for r in await importer.db.rows("SELECT code FROM currencies ORDER BY code")]


@pytest.mark.parametrize("fast_path", [True, False])
async def test_cr_only_line_ends_keep_the_last_record(importer: Importer, exports: Exports, fast_path: bool) -> None:
    importer = importer.with_settings(importer_fast_path=fast_path)
    await _yesterday(importer, exports)
    exports.set("currencies", export_body("currencies", YESTERDAY.replace("\n", "\r")))

    await importer.run("acme", "currencies", "2024-05-02")

    run = await importer.last_run()
    assert (run["status"], run["rows_read"], run["rows_deleted"]) == ("succeeded", 205, 0)
    assert run["parse_path"] == ("fast" if fast_path else "careful: the fast path is off (IMPORTER_FAST_PATH)")
    assert await _codes(importer) == CODES


async def test_finished_at_is_when_the_run_finished_not_when_its_transaction_began(db: Database) -> None:
    key = ledger.RunKey("acme", "users", dt.date(2024, 5, 1))
    async with db.pool.acquire() as conn:
        attempt = await ledger.start_attempt(conn, key, "job", "test")
        async with conn.transaction():
            began = await conn.fetchval("SELECT now()")
            await conn.execute("SELECT pg_sleep(0.05)")  # the run's work inside its transaction
            await ledger.finish(conn, attempt, "succeeded", RunStats(), [])
    finished = await db.value("SELECT finished_at FROM import_runs WHERE id = $1", attempt.id)
    assert finished - began >= dt.timedelta(seconds=0.05)


@pytest.mark.parametrize("ragged", [0, 5])
async def test_past_the_threshold_every_bad_row_is_counted(importer: Importer, exports: Exports, ragged: int) -> None:
    rows = [f"{i},u{i}" if i % 10 else f"x{i},u{i}" for i in range(1, 401)]  # 40 bad values: 10%
    rows[1 : 1 + ragged] = [f"{i + 2}" for i in range(ragged)]  # ragged rows, counted by the parser
    exports.set("users", export_body("users", "user_id,login\n" + "\n".join(rows) + "\n"))

    result = await importer.run("acme", "users")

    assert result.startswith(f"failed: too_many_rejects: {40 + ragged} of 400 rows rejected")
    run = await importer.last_run()
    assert (run["rows_read"], run["rows_rejected"], run["rows_imported"]) == (400, 40 + ragged, 0)
