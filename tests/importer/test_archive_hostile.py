"""Hostile zips: every damaged archive either gives back exactly its CSV or is refused as a ``BadExport``.

A third party's zip is damaged by byte edits (overwrite, insert, truncate) drawn by
hypothesis, for each compression method zipfile reads. The unzip stage must never
pass on other bytes than the CSV, and never fail with anything but a ``BadExport``
whose message names the problem in bounded length: an ``OSError`` out of bz2 was
taken by the job as "PostgreSQL is unavailable" and the export retried forever, and
other exceptions ended as ``internal_error``.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.importer.archive import ZipLimits, unzip
from services.importer.errors import BadExport
from services.importer.stats import Tally, Timings
from tests.importer.conftest import Importer
from tests.importer.support import Exports, envelope, zip_bytes

CSV = b"user_id,login\n" + b"".join(b"%d,user%d\n" % (i, i) for i in range(1, 201))
METHODS = {
    "stored": zipfile.ZIP_STORED,
    "deflated": zipfile.ZIP_DEFLATED,
    "bzip2": zipfile.ZIP_BZIP2,
    "lzma": zipfile.ZIP_LZMA,
}
ZIPS = {name: zip_bytes({"users.csv": CSV}, compression=method) for name, method in METHODS.items()}
LIMITS = ZipLimits(max_zip_bytes=1 << 30, max_csv_bytes=1 << 30, max_ratio=200.0)
CODES = {
    "not_a_zip",
    "corrupt_zip",
    "empty_zip",
    "several_members",
    "directory_member",
    "unsafe_member_name",
    "encrypted_zip",
    "zip_bomb",
}


async def _unzip(data: bytes) -> bytes:
    return b"".join([chunk async for chunk in unzip(io.BytesIO(data), LIMITS, Timings(), Tally())])


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    method = draw(st.sampled_from(sorted(ZIPS)))
    data = bytearray(ZIPS[method])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["overwrite", "insert", "truncate"]))
        if edit == "overwrite":
            data[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:]
        if not data:
            break
    return method, bytes(data)


def _overwrite(method: str, at: int, value: bytes) -> tuple[str, bytes]:
    data = bytearray(ZIPS[method])
    data[at : at + len(value)] = value
    return method, bytes(data)


def _central(method: str, edits: dict[int, bytes]) -> tuple[str, bytes]:
    """The zip with bytes overwritten at offsets into its central directory entry."""
    data = bytearray(ZIPS[method])
    entry = data.rfind(b"PK\x01\x02")
    for at, value in edits.items():
        data[entry + at : entry + at + len(value)] = value
    return method, bytes(data)


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(case=damaged())
# Found before the fix (single bytes overwritten): bz2's OSError (taken for PostgreSQL being unavailable),
# lzma's LZMAError, a "zip file version" NotImplementedError at open, an IndexError and a negative seek
# (ValueError) out of a damaged directory, a member name flagged UTF-8 that is not.
@example(case=_overwrite("bzip2", 28, b"\xff"))
@example(case=_overwrite("lzma", 41, b"\x00"))
@example(case=_overwrite("stored", 2243, b"\xff"))
@example(case=_overwrite("deflated", 861, b"\x00"))
@example(case=_overwrite("deflated", 886, b"\xff"))
@example(case=_central("stored", {9: b"\x08", 46: b"use\xa2s.csv"}))
def test_a_damaged_zip_gives_its_csv_or_a_clear_refusal(case: tuple[str, bytes]) -> None:
    _, data = case
    try:
        out = asyncio.run(_unzip(data))
    except BadExport as exc:
        assert exc.code in CODES
        assert len(exc.message) <= 400, exc.message
    else:
        assert out == CSV


def _corrupt_bzip2() -> bytes:
    data = bytearray(ZIPS["bzip2"])
    start = data.find(b"BZh")
    data[start + 3 : start + 5] = b"\x00\x00"
    return bytes(data)


async def test_a_corrupt_bzip2_member_fails_the_run_once(importer: Importer, exports: Exports, tmp_path: Path) -> None:
    exports.set("users", envelope("users", _corrupt_bzip2()))

    result = await importer.run("acme", "users")

    assert result.startswith("failed: corrupt_zip"), result
    run = await importer.last_run()
    assert (run["status"], run["error_class"], run["will_retry"]) == ("failed", "corrupt_zip", False)
    assert "'users.csv'" in run["error_message"]
    assert len(exports.calls) == 1
    assert await importer.db.value("SELECT count(*) FROM users") == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("conduit-import-")] == []


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_reads_back_exactly(method: str) -> None:
    assert asyncio.run(_unzip(ZIPS[method])) == CSV
