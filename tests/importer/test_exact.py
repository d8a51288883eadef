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

from services.importer import csv_requote, csv_stream, ledger
from services.importer.stats import Outcome
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


@pytest.mark.parametrize("end", ["\n", "\r\n"])
async def test_a_dot_line_never_ends_the_data_nor_deletes_the_rows_after_it(
    importer: Importer, exports: Exports, end: str
) -> None:
    await _yesterday(importer, exports)
    today = f"{HEAD}AUD,Dollar,2,$\\.\nCHF,Franc,2,F\n\\.\nEUR,Euro,2,E\nGBP,Pound,2,L\nUSD,Dollar,2,$\n{MORE}"
    exports.set("currencies", export_body("currencies", today.replace("\n", end)))

    await importer.run("acme", "currencies", "2024-05-02")

    run = await importer.last_run()
    # COPY gets the line quoted, as a value: a one-field record, which COPY refuses as the careful path rejects it.
    assert run["parse_path"].startswith('careful: COPY: missing data for column "name"')
    # The careful path reads `\.` as a one-field record: rejected (so nothing is deleted), the rest imported.
    assert (run["status"], run["rows_read"], run["rows_rejected"], run["rows_deleted"]) == (
        "partially_rejected", 206, 1, 0
    )  # fmt: skip
    assert await _codes(importer) == CODES


async def test_a_quote_inside_a_bare_field_does_not_swallow_the_records_after_it(
    importer: Importer, exports: Exports
) -> None:
    today = HEAD + 'AUD,5" Dollar,2,$\nCHF,Franc 7",2,F\nEUR, "Euro",2,E\nGBP,Pound,2,"L"\n'
    exports.set("currencies", export_body("currencies", today))

    await importer.run("acme", "currencies")

    run = await importer.last_run()
    # Still by COPY: the records it would misread are sent quoted, as the careful parser reads them.
    assert run["parse_path"] == "first load (3 records re-quoted for COPY)"
    got = await importer.db.rows("SELECT code, name, symbol FROM currencies ORDER BY code")
    assert got == [
        {"code": "AUD", "name": '5" Dollar', "symbol": "$"},
        {"code": "CHF", "name": 'Franc 7"', "symbol": "F"},
        {"code": "EUR", "name": ' "Euro"', "symbol": "E"},
        {"code": "GBP", "name": "Pound", "symbol": "L"},
    ]


@pytest.mark.parametrize("fast_path", [True, False])
async def test_cr_only_line_ends_keep_the_last_record(importer: Importer, exports: Exports, fast_path: bool) -> None:
    importer = importer.with_settings(importer_fast_path=fast_path)
    await _yesterday(importer, exports)
    exports.set("currencies", export_body("currencies", YESTERDAY.replace("\n", "\r")))

    await importer.run("acme", "currencies", "2024-05-02")

    run = await importer.last_run()
    assert (run["status"], run["rows_read"], run["rows_deleted"]) == ("succeeded", 205, 0)
    assert run["parse_path"] == ("swap" if fast_path else "careful: the fast path is off (IMPORTER_FAST_PATH)")
    assert await _codes(importer) == CODES


async def test_copy_reading_fewer_rows_than_the_file_holds_is_never_trusted(
    importer: Importer, exports: Exports, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the feed missed a construct that makes COPY stop early, the row count still catches it."""
    monkeypatch.setattr(csv_requote, "clean_lines", lambda context, head: head.count(b"\n"))
    await _yesterday(importer, exports)
    exports.set("currencies", export_body("currencies", YESTERDAY.replace("CHF,", "\\.\nCHF,")))

    await importer.run("acme", "currencies", "2024-05-02")

    run = await importer.last_run()
    assert run["parse_path"] == "careful: COPY would misread this file: COPY read 1 rows where the file holds 206"
    assert (run["status"], run["rows_rejected"], run["rows_deleted"]) == ("partially_rejected", 1, 0)
    assert await _codes(importer) == CODES


async def test_a_parser_that_stops_before_the_last_line_fails_the_run_and_deletes_nothing(
    importer: Importer, exports: Exports, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiocsv as it was (no CRLF after a final CR): it drops the last record, and the line check refuses that."""

    async def without_the_fix(self: csv_stream._TextReader, _: int) -> str:
        text = await anext(self._texts, "")
        self.line_ends += text.count("\n") + text.count("\r") - text.count("\r\n")
        return text

    monkeypatch.setattr(csv_stream._TextReader, "read", without_the_fix)
    importer = importer.with_settings(importer_fast_path=False)
    await _yesterday(importer, exports)
    exports.set("currencies", export_body("currencies", YESTERDAY.replace("\n", "\r")))

    result = await importer.run("acme", "currencies", "2024-05-02")

    assert result == (
        "failed: incomplete_parse: the CSV parser read 204 rows where the file holds 205; nothing was imported"
    )
    assert await _codes(importer) == CODES


async def test_finished_at_is_when_the_run_finished_not_when_its_transaction_began(db: Database) -> None:
    key = ledger.RunKey("acme", "users", dt.date(2024, 5, 1))
    async with db.pool.acquire() as conn:
        attempt = await ledger.start_attempt(conn, key, "job", "test")
        async with conn.transaction():
            began = await conn.fetchval("SELECT now()")
            await conn.execute("SELECT pg_sleep(0.05)")  # the run's work inside its transaction
            await ledger.finish(conn, attempt, "succeeded", Outcome(), [])
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
