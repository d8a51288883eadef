"""The zip read as it arrives gives zipfile's answer, for every zip: the same CSV, or the same refusal.

zipfile (archive.unzip over the spooled zip) is the reference reader. Each zip is
fed to the stream (zip_stream.py) in pieces of a drawn size and read as the
pipeline reads it: the header is parsed from the first few pieces, COPY's read
starts again from the first and goes on to the end. The pipeline's answer is what the stream gives, or, where
it gives up (``NotStreamed``), zipfile's read of the spool; it must equal
zipfile's read of the same bytes, field by field: the bytes, or the refusal's
code and message. The spool must hold exactly the bytes downloaded, and the
stream must never pass on more than the size and ratio limits allow, even
before the directory has arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from services.importer import zip_stream
from services.importer.archive import ZipLimits, too_large, unzip
from services.importer.errors import BadExport
from services.importer.stats import Tally, Timings
from services.importer.zip_stream import NeedMore, NotStreamed, Streamed, ZipStream
from tests.importer.support import pieces
from tests.importer.zip_strategies import build, hidden_member, hostile, with_field, written

LIMITS = [
    ZipLimits(max_zip_bytes=1 << 30, max_csv_bytes=1 << 30, max_ratio=200.0),
    ZipLimits(max_zip_bytes=1 << 30, max_csv_bytes=4000, max_ratio=200.0),
    ZipLimits(max_zip_bytes=2000, max_csv_bytes=1 << 30, max_ratio=5.0),
]
CSV = b"id,name\n" + b"".join(b"%d,user%d\n" % (i, i) for i in range(300))
GOOD = build([("data.csv", CSV)], zipfile.ZIP_DEFLATED)


@dataclass
class Read:
    """What one reader made of a zip: the CSV, or a refusal (code, message)."""

    csv: bytes | None = None
    refused: tuple[str, str] | None = None


async def _reference(data: bytes, limits: ZipLimits) -> Read:
    """The importer before streaming: spool the whole zip (refusing one too large), then zipfile."""
    if len(data) > limits.max_zip_bytes:
        return Read(refused=("too_large", too_large(limits).message))
    return await _zipfile(data, limits)


async def _zipfile(data: bytes, limits: ZipLimits) -> Read:
    try:
        return Read(csv=b"".join([c async for c in unzip(io.BytesIO(data), limits, Timings(), Tally())]))
    except BadExport as exc:
        return Read(refused=(exc.code, exc.message))


@contextmanager
def _inflating(size: int) -> Iterator[None]:
    """Inflate at most ``size`` bytes a step, so the data's end falls anywhere in a step."""
    before, zip_stream._OUT = zip_stream._OUT, size
    try:
        yield
    finally:
        zip_stream._OUT = before


@dataclass
class Streaming:
    read: Read
    gave_up: bool
    spool: bytes
    passed: int  # the bytes the stream itself handed on (not zipfile's read of the spool)
    head: bytes  # what the header's read saw


async def _streamed(data: bytes, limits: ZipLimits, piece: int, header_pieces: int) -> Streaming:
    """The pipeline's read: the stream (the header's read, then COPY's), and the spool where it gives up."""
    spool = io.BytesIO()
    stream = ZipStream(pieces(data, piece), spool, limits, Timings())
    source = Streamed(stream, spool, limits, Timings())
    header, copy, head = Tally(), Tally(), b""
    try:
        for _ in range(header_pieces + 1):  # the header's parse asked for more this many times
            await source.more()
        with contextlib.suppress(NeedMore):
            async for piece in source.head(header):
                head += piece
        rest = source.read(copy if not stream.settled else Tally())
        read, gave_up = Read(csv=b"".join([c async for c in rest])), False
    except BadExport as exc:
        read, gave_up = Read(refused=(exc.code, exc.message)), False
    except NotStreamed:
        read, gave_up = await _zipfile(spool.getvalue(), limits), True
    return Streaming(read, gave_up, spool.getvalue(), max(header.n, copy.n), head)


def _check(data: bytes, limits: ZipLimits, piece: int, header_pieces: int) -> Streaming:
    reference = asyncio.run(_reference(data, limits))
    got = asyncio.run(_streamed(data, limits, piece, header_pieces))
    assert got.read == reference, f"stream {got.read} against zipfile {reference} (gave up: {got.gave_up})"
    if got.read.csv is not None and not got.gave_up:
        assert got.read.csv.startswith(got.head), f"the header's read {got.head[:80]!r} against zipfile's CSV"
    if got.read.refused is None or got.read.refused[0] != "too_large":
        assert got.spool == data, "the spool does not hold the zip as downloaded"
    return got


def _case(data: bytes, piece: int = 64, inflated: int = 1 << 20) -> dict[str, object]:
    return {"data": data, "limits": LIMITS[0], "piece": piece, "header_pieces": 1, "inflated": inflated}


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    data=hostile(),
    limits=st.sampled_from(LIMITS),
    piece=st.sampled_from([1, 7, 64, 4096, 1 << 20]),
    header_pieces=st.integers(0, 3),
    inflated=st.sampled_from([1, 64, 1 << 20]),
)
# Each one a disagreement only the directory shows (the stream alone would pass on other bytes than zipfile):
@example(**_case(hidden_member(b"evil,row\n") + GOOD))
@example(**_case(with_field(GOOD, "central", "crc", 0)))
@example(**_case(with_field(GOOD, "central", "size", len(CSV) - 1)))
@example(**_case(with_field(GOOD, "central", "method", 0)))
@example(**_case(with_field(GOOD, "central", "flags", 1)))
@example(**_case(with_field(GOOD, "local", "method", 0)))
@example(**_case(GOOD.replace(b"data.csv", b"data.txt", 1)))
@example(**_case(build([("data.csv", CSV), ("more.csv", CSV)], 8)))
@example(**_case(GOOD + b"junk"))
def test_the_stream_gives_zipfiles_answer_for_any_zip(
    data: bytes, limits: ZipLimits, piece: int, header_pieces: int, inflated: int
) -> None:
    with _inflating(inflated):
        got = _check(data, limits, piece, header_pieces)
    event("read from the spool" if got.gave_up else "streamed" if got.read.refused is None else "refused")
    assert got.passed <= min(limits.max_csv_bytes, limits.max_ratio * max(len(data), 1)), "read past the limits"


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    data=written([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
    piece=st.sampled_from([1, 64, 4096, 1 << 20]),
    inflated=st.sampled_from([1, 64, 1 << 20]),
)
# Found: a step that ended the deflate data with input to spare counted that input twice (unconsumed_tail and
# unused_data), so the compressed size never matched the directory's and most exports were read again.
@example(data=build([("data.csv", b"id\n1\n\\.\n2\n")], zipfile.ZIP_DEFLATED), piece=64, inflated=64)
def test_a_zip_as_writers_make_it_is_streamed_not_read_again(data: bytes, piece: int, inflated: int) -> None:
    """One member deflated (sizes before or after the data), or stored with its size before: read as it arrives.

    A stored member whose size follows its data has no end a stream can find: that one is read from the spool.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    info = infos[0]
    endless = info.compress_type == zipfile.ZIP_STORED and info.flag_bits & 0x8
    bomb = info.file_size > LIMITS[0].max_ratio * max(info.compress_size, 1)
    streamable = len(infos) == 1 and info.filename == "data.csv" and not endless and not bomb
    with _inflating(inflated):
        got = _check(data, LIMITS[0], piece, 1)
    if streamable:
        assert not got.gave_up and got.read.csv is not None


def test_a_bomb_is_stopped_before_its_directory_arrives() -> None:
    bomb = build([("data.csv", b"\x00" * 5_000_000)], zipfile.ZIP_DEFLATED, seekable=False)
    limits = LIMITS[0]
    got = _check(bomb, limits, 4096, 1)
    assert got.read.refused is not None and got.read.refused[0] == "zip_bomb"
    assert got.gave_up and got.passed <= limits.max_ratio * len(bomb)


@pytest.mark.parametrize(
    "data",
    [
        hidden_member(b"evil,row\n") + GOOD,
        with_field(GOOD, "central", "crc", 0),
        with_field(GOOD, "central", "size", len(CSV) - 1),
    ],
    ids=["a member the directory does not list", "a CRC the directory disagrees with", "a shorter size"],
)
def test_without_the_directory_check_the_stream_would_pass_on_other_bytes(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The differential test has teeth: take the check away and these zips read otherwise than zipfile reads them."""
    monkeypatch.setattr(zip_stream.ZipStream, "_disagreement", lambda self: None)
    with pytest.raises(AssertionError, match="against zipfile"):
        _check(data, LIMITS[0], 64, 1)
