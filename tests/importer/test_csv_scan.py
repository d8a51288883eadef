"""The readers against the definition, without a database: Python's csv module (excel dialect) is the reference.

- the careful path's parser (aiocsv, fed in any chunking) gives the reference's records;
- the feed refuses a field longer than the limit exactly where the reference reads one;
- the scan that decides what COPY may read: wherever it lets a file through, its
  record count is the reference's, in any chunking (what COPY reads of such a
  file is checked against PostgreSQL in test_csv_paths.py).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from unittest.mock import patch

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.importer import csv_requote
from services.importer.csv_count import RecordCount
from services.importer.csv_fields import FieldLimit, FieldTooLong
from services.importer.csv_requote import CopyFeed
from services.importer.csv_scan import CopyScan, Untrusted
from services.importer.csv_stream import CsvRecords
from services.importer.errors import BadExport
from services.importer.stats import Timings
from tests.importer.csv_strategies import csv_file

CHUNKS = st.integers(1, 80)


def reference(text: str) -> list[list[str]]:
    """The definition: Python's csv module, blank records skipped."""
    return [r for r in csv.reader(io.StringIO(text, newline="")) if r]


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


async def _texts(text: str, size: int) -> AsyncIterator[str]:
    for i in range(0, len(text), size):
        yield text[i : i + size]


async def careful(text: str, size: int) -> list[list[str]]:
    records = CsvRecords(_texts(text, size), 2, 1_000_000)
    out = [await records.header()]
    async for batch in records.batches(Timings()):
        out.extend(batch.records)
    return out


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(data=csv_file(), size=CHUNKS)
@example(data=b"a,b\r1,2\r3,4\r", size=80)  # aiocsv 1.4 dropped the last record of a CR-only file
@example(data=b"a,b\r1,2\r3,4\r", size=1)
def test_the_careful_parser_reads_what_the_csv_module_reads(data: bytes, size: int) -> None:
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    expected = reference(text)
    try:
        got = asyncio.run(careful(text, size))
    except BadExport as exc:
        # Refused as a whole: a field past the limit, or no header (a quote never closed is csv_count's).
        assert exc.code == "empty_file" and not expected, exc
        return
    assert got == expected


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(data=csv_file(), size=CHUNKS)
@example(data=b'h\n"a\r\nb"\r\n', size=4)
@example(data=b'h\r\n1\r\n"x"y\r\n', size=1)
@example(data=b"h\n1,\\\n\\.x\n", size=5)
def test_a_file_the_scan_lets_through_has_the_records_the_definition_reads(data: bytes, size: int) -> None:
    scan = CopyScan()
    try:
        for piece in _pieces(data, size):
            scan.feed(piece)
        scan.finish()
    except Untrusted:
        return
    text = data.decode("utf-8", "replace")
    assert scan.records == len(reference(text))
    assert [] not in list(csv.reader(io.StringIO(text, newline="")))  # no blank line got through


@given(size=CHUNKS)
@settings(max_examples=50, derandomize=True, database=None, deadline=None)
def test_the_scan_refuses_what_copy_reads_differently(size: int) -> None:
    refused = {
        b"h\n1\n\\.\n2\n": "line 3: a line holding only \\.",
        b"h\r\n1\r\n\\.": "line 3: a line holding only \\.",
        b'h,d\n1,5" screen\n2,3"\n': "line 2: a quote inside an unquoted field",
        b'h,d\n1, "a"\n': "line 2: a quote inside an unquoted field",
        b'h,d\n1,"a"b"c"\n': "line 2: a quote after a closing quote",
        b"h\n1\n\n2\n": "line 3: a blank line",
        b"\nh\n1\n": "line 1: a blank line",
        b"h\r1\r\r2\r": "line 3: a blank line",
        b"h\n1\x00\n": "line 2: a NUL byte",
    }
    for data, why in refused.items():
        scan = CopyScan()
        try:
            for piece in _pieces(data, size):
                scan.feed(piece)
            scan.finish()
        except Untrusted as exc:
            assert str(exc).startswith(why), (data, str(exc))
        else:
            raise AssertionError(f"{data!r} got through")


def copy_refuses_line_ends(sent: bytes) -> bool:
    """Whether PostgreSQL's COPY (CSV) refuses these bytes for their line ends: its own reading, modelled here.

    COPY takes the line end of its first line (LF, CRLF or CR) and refuses any line end of another kind outside
    quotes ("literal carriage return found in data"); a quote character toggles "inside quotes" wherever it is.
    """
    kind, quoted, i = b"", False, 0
    while i < len(sent):
        c = sent[i : i + 1]
        if c == b'"':
            quoted = not quoted
        elif c in (b"\r", b"\n") and not quoted:
            end = b"\r\n" if sent[i : i + 2] == b"\r\n" else c
            if kind and end != kind:
                return True
            kind, i = end, i + len(end) - 1
        i += 1
    return False


def _fed(data: bytes, size: int) -> tuple[bytes, CopyFeed]:
    feed = CopyFeed()
    out = [feed.feed(piece) for piece in _pieces(data, size)]
    out.append(feed.finish())
    return b"".join(out), feed


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(data=csv_file(), size=CHUNKS)
@example(data=b'h,d\n1,5" screen\n2,3"\n', size=80)
@example(data=b'h,d\n1, "a"\n\n2,"b"c"d"\n\\.\n', size=3)
@example(data=b'h\r""\r\r"x\r\ny"', size=2)
@example(data=b'h,d\r\n1,"x"\r\n\\.\r\n2,y\r\n\r\n3,5" z\r\n', size=80)  # a CRLF is one line end
def test_what_copy_gets_reads_as_the_file_does_and_copy_reads_it_alike(data: bytes, size: int) -> None:
    """The bytes given to COPY: the definition reads the file's records from them, and the scan finds nothing."""
    try:
        sent, feed = _fed(data, size)
    except Untrusted as exc:
        # Left to the careful path: what COPY cannot hold, or a quoted field that runs to the end of the file.
        assert b"\x00" in data or "never closed" in str(exc), exc
        return
    expected = reference(data.decode("utf-8", "replace"))
    if copy_refuses_line_ends(sent):
        return  # the careful path reads the file; the feed counted only the file's own line ends (csv_requote.py)
    assert reference(sent.decode("utf-8", "replace")) == expected
    assert feed.records == len(expected)
    scan = CopyScan()
    for piece in _pieces(sent, size):
        scan.feed(piece)
    scan.finish()
    assert scan.records == len(expected)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(data=csv_file(), size=CHUNKS, limit=st.integers(1, 60))
@example(data=b"h,d\n1," + "é".encode() * 40 + b"\n", size=80, limit=40)  # 80 bytes, 40 characters: it fits
@example(data=b"h,d\n1," + "é".encode() * 41 + b"\n", size=80, limit=40)
@example(data=b"h,d\r1," + "€".encode() * 14 + b"\r2,x\r", size=3, limit=13)  # CR-only, three bytes a character
@example(data=b'h,d\n1,"' + b"ab\r\n" * 10 + b'x"\n', size=7, limit=40)  # across lines, in a quoted field
@example(data=b'h,d,e\n1,5" screen,' + b"y" * 41 + b'\n2,3",\n', size=5, limit=40)  # in a record written again
@example(data=b'h,d\n1,5" screen\n2,' + b"y" * 41 + b'\n3,3"\n', size=80, limit=40)  # between two written again
def test_the_feed_refuses_a_field_past_the_limit_exactly_when_the_definition_reads_one(
    data: bytes, size: int, limit: int
) -> None:
    """The careful parser's field limit (any column), known by the feed while the bytes pass (csv_fields.py)."""
    data = data.removeprefix(b"\xef\xbb\xbf")  # as the fast path drops it before the feed
    feed = CopyFeed(FieldLimit(limit, "UTF8"))
    try:
        for piece in _pieces(data, size):
            feed.feed(piece)
        feed.finish()
        refused = False
    except FieldTooLong:
        refused = True
    except Untrusted:
        return  # the careful path reads the file, field limit and all
    longest = max((len(f) for record in reference(data.decode("utf-8", "replace")) for f in record), default=0)
    assert refused == (longest > limit), (longest, limit)


def ends_in_an_open_quote(text: str) -> bool:
    """By the definition: a record after the file's end is swallowed only by a quoted field still open."""
    return reference(text + "\nconduit-sentinel\n")[-1] != ["conduit-sentinel"]


async def _counted(data: bytes, size: int) -> RecordCount:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in _pieces(data, size):
            yield piece

    count = RecordCount()
    async for _ in count.through(chunks()):
        pass
    return count


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(data=csv_file(), size=CHUNKS)
@example(data=b'h,d\n1,5" screen\n2,x\n', size=80)  # one inch mark: an odd count, a whole file
@example(data=b'h,d\n1,5" screen\n2,"bob\n3,carl\n', size=4)  # never closed, an even count
@example(data=b'h,d\r\n1,a\n2,b\r3,"c\r\n"\r\n', size=3)  # line ends of every kind
@example(data=b'h\n"', size=1)
def test_the_careful_paths_count_knows_a_quote_never_closed_and_the_records(data: bytes, size: int) -> None:
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    count = asyncio.run(_counted(data, size))
    assert (count.never_closed is not None) == ends_in_an_open_quote(text), count.never_closed
    if count.never_closed is None and count.records is not None:
        assert count.records == len(reference(text))


# Records COPY reads as the definition does, with a backslash-dot in every place but a line of its own.
_PLAIN = ["1,a,x", "2,b,C:\\.cache", '3,"c, d","see\nbelow"', '4,"e","note\r\n\\.\r\nend"', "5,\\.,\\.x", '6,"\\.",f']
# One unusual record ("": none) and the bytes COPY must get for it: written again only where COPY would misread.
_ODD = {"": "", '7,5" screen,g': '7,"5"" screen",g', "\\.": '"\\."', '8,"ab"c,h': '8,"ab"c,h'}
_GENERAL = csv_requote.clean_lines


@st.composite
def _plain_file(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A file of plain records in one line end with an odd one somewhere, and the bytes COPY must get for it."""
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    records = draw(st.lists(st.sampled_from(_PLAIN), min_size=1, max_size=40))
    odd = draw(st.sampled_from(sorted(_ODD)))
    at = draw(st.integers(0, len(records)))
    sent = [*records[:at], _ODD[odd], *records[at:]] if odd else records
    records = [*records[:at], odd, *records[at:]] if odd else records
    return eol.join(["h,d,e", *records, ""]).encode(), eol.join(["h,d,e", *sent, ""]).encode()


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(case=_plain_file(), size=st.integers(1, 120))
@example(case=(b'h,d,e\r1,a,x\r4,"e","note\r\n\\.\r\nend"\r2,b,C:\\.cache\r', b""), size=20)
def test_only_the_record_copy_would_misread_is_written_again(case: tuple[bytes, bytes], size: int) -> None:
    """Issue 15: a backslash-dot that is not a line of its own (in text, in a quoted note), an inch mark or a
    ``\\.`` line somewhere: COPY gets the file's bytes as they are but that one record, in any chunking and line
    end, and once the file's line end is known no chunk goes back to the general check (``clean_lines``)."""
    data, expected = case
    expected = expected or data
    checked: list[int] = []

    def general(context: bytes, head: bytes) -> int | None:
        checked.append(len(head))
        return _GENERAL(context, head)

    with patch.object(csv_requote, "clean_lines", general):
        sent, feed = _fed(data, size)
    assert sent == expected
    assert feed.rewritten == (sent != data)
    assert reference(sent.decode()) == reference(data.decode())
    assert sum(checked) <= len(b"h,d,e\r\n") + size  # the header's chunk
