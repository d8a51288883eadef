"""The zip is read as it downloads, and nothing of it commits before the whole download and its directory agree.

Through a real worker, the fake export server and PostgreSQL: COPY runs while
the answer is still arriving; a zip whose directory disagrees with what was
streamed is read again as zipfile reads it; and whatever turns out wrong after
the CSV's last row has gone to COPY (the envelope's end, the zip's directory)
fails the run with the error it gave before streaming, with no row left behind.
"""

from __future__ import annotations

import asyncio
import base64
import zipfile

import orjson
from structlog.testing import capture_logs

from tests.importer.conftest import Importer
from tests.importer.support import Exports, envelope, export_body, zip_bytes
from tests.importer.zip_strategies import build, hidden_member, with_field

USERS = b"user_id,login\n" + b"".join(b"%d,user%d\n" % (i, i) for i in range(1, 20_001))
EVIL = b"user_id,login\n666,evil\n"


async def _copied_rows(importer: Importer) -> int:
    """Rows a COPY into this test's table has taken so far (pg_stat_progress_copy), 0 if none runs."""
    sql = "SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy WHERE relid = 'users'::regclass"
    found = await importer.db.value(sql)
    return int(found)


async def test_copy_takes_rows_while_the_download_is_still_arriving(importer: Importer, exports: Exports) -> None:
    body = export_body("users", USERS)
    answer = exports.set("users", body, pause_after=len(body) * 3 // 4)
    run = asyncio.create_task(importer.run("acme", "users"))
    await answer.paused.wait()
    copied = 0
    for _ in range(500):  # COPY is PostgreSQL's to run: look until it has taken rows (each look is a query)
        copied = await _copied_rows(importer)
        if copied or run.done():
            break
    answer.resume.set()

    assert (await run).startswith("succeeded: 20000 rows imported")
    assert copied > 0, "no row reached COPY before the last quarter of the download"
    assert await importer.db.value("SELECT count(*) FROM users") == 20_000


async def test_a_zip_written_as_a_stream_is_streamed(importer: Importer, exports: Exports) -> None:
    """Sizes and CRC after the data (a data descriptor), as a writer that cannot seek back leaves them."""
    exports.set("users", envelope("users", build([("users.csv", USERS)], zipfile.ZIP_DEFLATED, seekable=False)))

    with capture_logs() as logs:
        result = await importer.run("acme", "users")

    assert result.startswith("succeeded: 20000 rows imported")
    assert not [e for e in logs if e["event"] == "import reads the spooled zip"]
    assert (await importer.last_run())["parse_path"] == "first load"


async def test_a_member_the_directory_does_not_list_is_never_imported(importer: Importer, exports: Exports) -> None:
    """The stream COPYs the hidden member whole before the directory shows it is not the one listed."""
    evil = b"user_id,login\n" + b"".join(b"%d,evil\n" % i for i in range(1, 30_001))
    exports.set("users", envelope("users", hidden_member(evil) + zip_bytes({"users.csv": USERS})))

    with capture_logs() as logs:
        result = await importer.run("acme", "users")

    assert result.startswith("succeeded: 20000 rows imported")
    assert await importer.db.value("SELECT count(*) FROM users WHERE login = 'evil'") == 0
    assert ["directory says" in e["why"] for e in logs if e["event"] == "import reads the spooled zip"] == [True]


async def test_a_crc_the_directory_disagrees_with_fails_and_commits_nothing(
    importer: Importer, exports: Exports
) -> None:
    exports.set("users", envelope("users", with_field(zip_bytes({"users.csv": USERS}), "central", "crc", 1)))

    result = await importer.run("acme", "users")

    assert result.startswith("failed: corrupt_zip"), result
    assert "Bad CRC-32" in (await importer.last_run())["error_message"]
    assert await importer.db.value("SELECT count(*) FROM users") == 0


async def test_two_members_fail_as_before_after_the_first_was_copied(importer: Importer, exports: Exports) -> None:
    exports.set("users", envelope("users", zip_bytes({"users.csv": USERS, "more.csv": EVIL})))

    result = await importer.run("acme", "users")

    assert result.startswith("failed: several_members"), result
    assert await importer.db.value("SELECT count(*) FROM users") == 0


async def test_an_envelope_that_goes_wrong_after_the_data_commits_nothing(importer: Importer, exports: Exports) -> None:
    data = base64.b64encode(zip_bytes({"users.csv": USERS})).decode()
    bodies = {
        "wrong_module": orjson.dumps({"data": data, "module_name": "invoices"}),
        "not_json": orjson.dumps({"module_name": "users", "data": data}) + b"garbage",
    }
    for code, body in bodies.items():
        exports.set("users", body)

        result = await importer.run("acme", "users", job_id=f"job-{code}")

        assert result.startswith(f"failed: {code}"), result
        assert await importer.db.value("SELECT count(*) FROM users") == 0


async def test_a_bad_header_in_a_broken_envelope_fails_for_the_envelope_as_before(
    importer: Importer, exports: Exports
) -> None:
    """The header is read from the stream long before the envelope ends: its refusal waits for the envelope's."""
    data = base64.b64encode(zip_bytes({"users.csv": b"nobody,knows\n" + USERS[14:]})).decode()
    exports.set("users", orjson.dumps({"module_name": "users", "data": data}) + b"garbage")

    result = await importer.run("acme", "users")

    assert result.startswith("failed: not_json"), result


async def test_a_download_that_stalls_is_transient_in_the_header_or_in_copy(
    importer: Importer, exports: Exports
) -> None:
    """A read timeout while the header is parsed or while COPY streams: a proxy timeout, retried, nothing left."""
    body = export_body("users", USERS)
    for cut in (200, len(body) * 3 // 4):
        answer = exports.set("users", body, pause_after=cut)

        result = await importer.with_settings(importer_max_attempts=1, importer_fetch_read_timeout=0.5).run(
            "acme", "users", job_id=f"job-{cut}"
        )
        answer.resume.set()

        assert result.startswith("failed: proxy_timeout"), result
        assert await importer.db.value("SELECT count(*) FROM users") == 0
