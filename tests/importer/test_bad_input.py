"""Bad input: each case ends in a failed or partially rejected run with a clear message, never a crash
loop (the job is not retried) and never partial data (a failed run leaves the table as it was)."""

from __future__ import annotations

import base64
import gzip
import os
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from services.importer import pipeline
from services.importer.fetch import max_body_bytes
from services.importer.validate import Layout, plan_layout
from shared.modules import ModuleDef
from tests.importer.conftest import Importer
from tests.importer.support import Exports, envelope, export_body, zip_bytes

USERS = "user_id,login\n" + "".join(f"{i},user{i}\n" for i in range(1, 201))
CSV = USERS.encode()


def zipped(name: str = "users.csv", data: bytes = CSV) -> bytes:
    return envelope("users", zip_bytes({name: data}))


FAILED_CASES: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "not json": (lambda: b"<html><body>Maintenance</body></html>", "not_json", "expected one of '{' at byte 0"),
    "truncated json": (lambda: zipped()[:-10], "not_json", "ends inside a string"),
    "json, but another shape": (lambda: b'{"module_name": "users"}', "not_json", "has no 'data' member"),
    "data not a string": (lambda: b'{"module_name": "users", "data": 42}', "not_json", "'data' is not a string"),
    "trailing garbage": (lambda: zipped() + b"xx", "not_json", "unexpected data after the object"),
    "wrong module_name": (lambda: envelope("contacts", zip_bytes({"u.csv": CSV})), "wrong_module", '"contacts"'),
    "invalid base64": (lambda: b'{"module_name": "users", "data": "!!!!not base64!!"}', "invalid_base64", "base64"),
    "empty data": (lambda: b'{"module_name": "users", "data": ""}', "empty_export", "holds no file"),
    "not a zip": (lambda: envelope("users", b"user_id,login\n1,a\n"), "not_a_zip", "not a zip file"),
    "empty zip": (lambda: envelope("users", zip_bytes({})), "empty_zip", "holds no file"),
    "several members": (
        lambda: envelope("users", zip_bytes({"a.csv": CSV, "b.csv": CSV})),
        "several_members",
        "holds 2 files ('a.csv', 'b.csv')",
    ),
    "a directory": (
        lambda: envelope("users", zip_bytes({"exports/": b"", "exports/users.csv": CSV})),
        "directory_member",
        "'exports/'",
    ),
    "dot-dot member": (lambda: zipped("../../evil.csv"), "unsafe_member_name", "'../../evil.csv'"),
    "absolute member": (lambda: zipped("/tmp/evil.csv"), "unsafe_member_name", "'/tmp/evil.csv'"),
    "windows drive member": (lambda: zipped("C:\\evil.csv"), "unsafe_member_name", "absolute path"),
    "zip bomb by ratio": (lambda: zipped(data=b"0" * (8 << 20)), "zip_bomb", "compressed"),
    "not utf-8": (
        lambda: zipped(data="user_id,login\n1,ann\n2,zoë\n".encode("latin-1")),
        "encoding",
        "line 3: bytes eb are not valid utf-8",
    ),
    "missing required column": (lambda: zipped(data=b"user_id,email\n1,a@b.c\n"), "missing_columns", "'login'"),
    "empty file": (lambda: zipped(data=b""), "empty_file", "empty"),
    "blank lines only": (lambda: zipped(data=b"\r\n\n\r\n"), "empty_file", "empty"),
    "header only": (lambda: zipped(data=b"user_id,login\r\n"), "no_rows", "header but no rows"),
    "quote never closed": (
        lambda: zipped(data=b'user_id,login\n1,ann\n2,"bob\n3,carl\n'),
        "malformed_csv",
        "line 3: a quoted field is never closed (it runs to the end of the file)",
    ),
    "quote never closed, beside an inch mark (an even count)": (
        lambda: zipped(data=b'user_id,login\n1,5" ann\n2,"bob\n3,carl\n'),
        "malformed_csv",
        "line 3: a quoted field is never closed",
    ),
    "a 10 MB field": (
        lambda: zipped(data=b"user_id,login\n1," + base64.b64encode(os.urandom(15 << 19)) + b"\n"),
        "field_too_large",
        "line 2: a field is longer than 1048576 characters (IMPORTER_MAX_FIELD_CHARS)",
    ),
    "duplicate header": (lambda: zipped(data=b"user_id,login,login\n1,a,b\n"), "duplicate_column", "'login' twice"),
}


@pytest.mark.parametrize("case", FAILED_CASES)
async def test_bad_export_fails_the_run_once_with_a_clear_message(
    importer: Importer, exports: Exports, case: str, tmp_path: Path
) -> None:
    body, code, message = FAILED_CASES[case]
    exports.set("users", body())

    result = await importer.run("acme", "users")

    assert result.startswith(f"failed: {code}")
    run = await importer.last_run()
    assert (run["status"], run["error_class"], run["will_retry"]) == ("failed", code, False)
    assert message in run["error_message"]
    assert len(exports.calls) == 1  # not retried
    assert await importer.db.value("SELECT count(*) FROM users") == 0
    assert not list(tmp_path.rglob("evil.csv")) and not Path("/tmp/evil.csv").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("conduit-import-")] == []  # temp dir removed


async def test_zip_bomb_by_size(importer: Importer, exports: Exports) -> None:
    exports.set("users", zipped(data=CSV))
    result = await importer.with_settings(importer_max_csv_bytes=1000).run("acme", "users")
    assert result.startswith("failed: zip_bomb") and "IMPORTER_MAX_CSV_BYTES" in result


async def test_stored_zip_with_a_lying_directory_is_cut_off(importer: Importer, exports: Exports) -> None:
    # The directory says 10 bytes; zipfile stops at the declared size and the CRC check fails.
    data = bytearray(zip_bytes({"users.csv": CSV}, compression=zipfile.ZIP_STORED))
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    exports.set("users", envelope("users", bytes(data)))
    result = await importer.run("acme", "users")
    assert result.startswith("failed:")
    assert await importer.db.value("SELECT count(*) FROM users") == 0


def with_bad_line(line: str, at: int = 101) -> str:
    lines = USERS.splitlines(keepends=True)
    lines.insert(at, line)
    return "".join(lines)


@pytest.mark.parametrize(
    ("bad", "column", "reason"),
    [
        ("7777,\n", "login", "required value is empty"),
        ("abc,zed\n", "user_id", 'invalid input syntax for type bigint: "abc"'),
        ("99999999999999999999,zed\n", "user_id", "out of range for type bigint"),
        ("7777,zed,extra\n", None, "3 fields where the header has 2"),
        ("7777\n", None, "1 fields where the header has 2"),
        ("7777,z\x00d\n", None, "NUL character"),
    ],
)
async def test_a_bad_row_is_rejected_and_the_rest_imported(
    importer: Importer, exports: Exports, bad: str, column: str | None, reason: str
) -> None:
    exports.set("users", export_body("users", with_bad_line(bad)))

    result = await importer.run("acme", "users")

    assert result.startswith("partially_rejected: 200 rows imported, 1 rejected")
    assert await importer.db.value("SELECT count(*) FROM users") == 200
    run = await importer.last_run()
    assert (run["status"], run["rows_read"], run["rows_imported"], run["rows_rejected"]) == (
        "partially_rejected", 201, 200, 1
    )  # fmt: skip
    rejects = await importer.db.rows("SELECT line, column_name, reason, raw FROM import_rejects")
    assert len(rejects) == 1
    assert (rejects[0]["line"], rejects[0]["column_name"]) == (102, column)
    assert reason in rejects[0]["reason"]
    assert rejects[0]["raw"] == bad.strip().replace("\x00", "\ufffd")


async def test_values_that_do_not_fit_their_types_are_rejected_by_column(importer: Importer, exports: Exports) -> None:
    head = "transaction_id,account_code,quantity,amount,reconciled,value_date,booked_at,memo\n"
    good = "".join(f"{i},A{i},{i},{i}.50,true,2024-01-0{i % 9 + 1},2024-01-01T10:00:00Z,ok\n" for i in range(1, 801))
    bad = [
        "1001,A,1.5,1,true,2024-01-01,,x\n",  # integer with a fraction
        "1002,A,1,one,true,2024-01-01,,x\n",  # numeric
        "1003,A,1,1,maybe,2024-01-01,,x\n",  # boolean
        "1004,A,1,1,true,2024-02-30,,x\n",  # no such day
        "1005,A,1,1,true,2024-01-01,half past ten,x\n",  # timestamptz ("yesterday" would pass: PostgreSQL decides)
        "1006,A,3000000000,1,true,2024-01-01,,x\n",  # integer out of range
        "1007,A,1,1,true,,,x\n",  # required date empty
    ]
    exports.set("transactions", export_body("transactions", head + good + "".join(bad)))

    result = await importer.run("acme", "transactions")

    assert result.startswith("partially_rejected: 800 rows imported, 7 rejected")
    rejects = await importer.db.rows("SELECT line, column_name, reason FROM import_rejects ORDER BY line")
    assert [(r["line"], r["column_name"]) for r in rejects] == [
        (802, "quantity"),
        (803, "amount"),
        (804, "reconciled"),
        (805, "value_date"),
        (806, "booked_at"),
        (807, "quantity"),
        (808, "value_date"),
    ]
    assert 'invalid input syntax for type integer: "1.5"' in rejects[0]["reason"]
    assert "out of range" in rejects[3]["reason"]
    assert rejects[6]["reason"] == "required value is empty"
    assert await importer.db.value("SELECT count(*) FROM transactions") == 800


async def test_too_many_rejects_fail_the_run_and_import_nothing(importer: Importer, exports: Exports) -> None:
    rows = "".join(f"{i},u{i}\n" if i % 50 else f"x{i},u{i}\n" for i in range(1, 201))  # 2% bad
    exports.set("users", export_body("users", "user_id,login\n" + rows))

    result = await importer.run("acme", "users")

    assert result.startswith("failed: too_many_rejects")
    run = await importer.last_run()
    assert (run["status"], run["rows_imported"], run["will_retry"]) == ("failed", 0, False)
    assert run["rows_rejected"] > 2 and "more than the module allows (1.00%)" in run["error_message"]
    assert await importer.db.value("SELECT count(*) FROM users") == 0
    assert await importer.db.value("SELECT count(*) FROM import_rejects WHERE run_id = $1", run["id"]) >= 3


async def test_too_many_ragged_rows_fail_before_the_merge(importer: Importer, exports: Exports) -> None:
    exports.set("users", export_body("users", "user_id,login\n1,a\n2\n3,c\n"))
    result = await importer.run("acme", "users")
    assert result.startswith("failed: too_many_rejects")
    assert await importer.db.value("SELECT count(*) FROM import_rejects") == 1
    assert await importer.db.value("SELECT count(*) FROM users") == 0


async def test_rejected_rows_are_capped_but_all_counted(importer: Importer, exports: Exports) -> None:
    rows = "".join(f"{i},u{i}\n" if i % 10 else f"{i}\n" for i in range(1, 1001))  # 100 ragged rows
    exports.set("users", export_body("users", "user_id,login\n" + rows))
    capped = importer.with_settings(importer_rejects_kept=5, importer_reject_raw_chars=2)

    await capped.run("acme", "users")

    run = await importer.last_run()
    assert run["rows_rejected"] == 100
    kept = await importer.db.rows("SELECT line, raw FROM import_rejects ORDER BY line")
    assert [r["line"] for r in kept] == [11, 21, 31, 41, 51] and {len(r["raw"]) for r in kept} == {2}


async def test_text_after_a_closing_quote_reads_the_same_on_both_paths(importer: Importer, exports: Exports) -> None:
    # RFC 4180 leaves it open; PostgreSQL's COPY (fast path) and the careful parser both read "ann"x as annx.
    clean = 'user_id,login\n1,"ann"x\n' + "".join(f"{i},u{i}\n" for i in range(2, 201))
    exports.set("users", export_body("users", clean))
    await importer.run("acme", "users", "2024-05-01")
    exports.set("users", export_body("users", clean + "999\n"))  # a ragged row sends it down the careful path
    await importer.run("acme", "users", "2024-05-02")

    runs = await importer.db.runs()
    assert [r["parse_path"][:14] for r in runs] == ["first load", "careful: COPY:"]
    assert [r["status"] for r in runs] == ["succeeded", "partially_rejected"]
    assert await importer.db.value("SELECT login FROM users WHERE user_id = 1") == "annx"


async def test_an_endless_or_gzip_bombed_answer_stops_at_the_envelope_limit(
    importer: Importer, exports: Exports, tmp_path: Path
) -> None:
    """IMPORTER_MAX_ZIP_BYTES counted only the zip once decoded: whitespace (or any member) around it, sent
    gzipped, was read without end. 40 MiB of it travel as about 40 KB."""
    good = envelope("users", zip_bytes({"users.csv": CSV}))
    padded = good[:1] + b" " * (40 << 20) + good[1:]
    exports.set("users", gzip.compress(padded, compresslevel=1), headers={"Content-Encoding": "gzip"})

    result = await importer.with_settings(importer_max_zip_bytes=1000).run("acme", "users")

    assert result.startswith("failed: too_large") and "IMPORTER_MAX_ZIP_BYTES" in result
    run = await importer.last_run()
    assert run["bytes_received"] <= max_body_bytes(1000) + (256 << 10)
    assert await importer.db.value("SELECT count(*) FROM users") == 0
    assert len(exports.calls) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("conduit-import-")] == []


@pytest.mark.parametrize("fast", [True, False])
async def test_one_inch_mark_an_odd_count_of_quotes_is_a_valid_file(
    importer: Importer, exports: Exports, fast: bool
) -> None:
    # An odd number of quotes once failed the run as "a quoted field never closed"; by the definition
    # (Python's csv module) a quote inside a bare field is a character, so the file is whole.
    exports.set("users", zipped(data=b'user_id,login\n1,ann\n2,5" screen\n3,carl\n'))
    result = await importer.with_settings(importer_fast_path=fast).run("acme", "users")
    assert result.startswith("succeeded: 3 rows imported"), result
    rows = await importer.db.rows("SELECT user_id, login FROM users ORDER BY user_id")
    assert [(r["user_id"], r["login"]) for r in rows] == [(1, "ann"), (2, '5" screen'), (3, "carl")]


async def test_a_header_read_otherwise_the_second_time_fails_the_run_and_keeps_the_rows(
    importer: Importer, exports: Exports, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The careful path reads the header again; were it to map the columns otherwise than the first read (a cut
    byte order mark once did), values would land in the wrong columns: the run fails instead, nothing written."""
    head = "code,name,decimals,symbol\n"
    exports.set("currencies", export_body("currencies", head + "EUR,Euro,2,€\n"))
    await importer.run("acme", "currencies", "2024-05-01")
    exports.set("currencies", export_body("currencies", head + "EUR,Euro,3,E\nUSD,Dollar,2,$\n"))
    layouts: list[Layout] = []

    def second_read_otherwise(module: ModuleDef, header: list[str]) -> Layout:
        layout = plan_layout(module, header)
        layouts.append(layout)
        return layout if len(layouts) == 1 else replace(layout, columns=layout.columns[::-1])

    monkeypatch.setattr(pipeline, "plan_layout", second_read_otherwise)
    await importer.with_settings(importer_fast_path=False).run("acme", "currencies", "2024-05-02")

    run = await importer.last_run()
    assert (run["status"], run["error_class"]) == ("failed", "internal_error"), run
    assert "the header read again" in run["error_message"]
    assert await importer.db.rows("SELECT code, name, decimals FROM currencies") == [
        {"code": "EUR", "name": "Euro", "decimals": 2}
    ]
