"""Stage 4, parse: bytes to text in the module's encoding, then CSV records (aiocsv) in batches with line numbers.

aiocsv parses from an async source with a C parser; fed large chunks it reads
a million rows in about 2.4 s here. It reads quoting the way PostgreSQL's COPY
(the fast path) does where RFC 4180 leaves room: ``"ab"c`` is ``abc``. A quote
that is never closed would swallow the rest of the file into one field and
still give rows that look right; the pipeline reads the bytes by the definition
as well (csv_count.py) and fails such a run, naming the line where the last
record starts (:attr:`CsvRecords.last_record_line`).
"""

from __future__ import annotations

import codecs
import csv
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiocsv

from services.importer.errors import BadExport
from services.importer.stats import Timings
from services.importer.streams import whole_start

_UTF8_BOM = codecs.BOM_UTF8


@dataclass
class Batch:
    """Records in file order and the line each starts on (the header is line 1)."""

    lines: list[int] = field(default_factory=list)
    records: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class TextSeen:
    """What the text decoder saw as the text passed; only :func:`decode_text` writes it."""

    # The encoding the file was read in: the module's, or UTF-8 when the file starts with a UTF-8 BOM.
    encoding: str = "utf-8"
    # Set as soon as a NUL passes, which PostgreSQL text cannot hold; only then does the validator look
    # for NULs row by row (a per-field scan would cost a second per million rows).
    saw_nul: bool = False


async def decode_text(
    chunks: AsyncIterator[bytes], encoding: str, timings: Timings, seen: TextSeen
) -> AsyncIterator[str]:
    """Decode incrementally; a UTF-8 byte order mark is dropped (and means UTF-8) whatever the module says."""
    decoder: codecs.IncrementalDecoder | None = None
    lines = _Lines()
    async for chunk in whole_start(chunks, len(_UTF8_BOM)):
        with timings.timed("decode_text"):
            if decoder is None:
                if chunk.startswith(_UTF8_BOM):
                    chunk, encoding = chunk[len(_UTF8_BOM) :], "utf-8"
                seen.encoding = encoding
                decoder = codecs.getincrementaldecoder(encoding)("strict")
            text = _decode(decoder, chunk, encoding, lines)
            lines.add(text)
            if "\x00" in text:
                seen.saw_nul = True
        if text:
            yield text
    if decoder is not None:
        tail = _decode(decoder, b"", encoding, lines, final=True)
        if tail:
            yield tail


@dataclass
class _Lines:
    """The line ends of the text decoded so far, as the definition counts them: LF, CRLF or CR alone, one each."""

    ends: int = 0
    after_cr: bool = False

    def more(self, text: str) -> int:
        """The line ends ``text`` adds to what passed (a CRLF cut in two between chunks is one)."""
        n = text.count("\n") + text.count("\r") - text.count("\r\n")
        return n - 1 if self.after_cr and text.startswith("\n") else n

    def add(self, text: str) -> None:
        if text:
            self.ends += self.more(text)
            self.after_cr = text.endswith("\r")


def _decode(decoder: codecs.IncrementalDecoder, data: bytes, encoding: str, lines: _Lines, final: bool = False) -> str:
    try:
        text: str = decoder.decode(data, final)
        return text
    except UnicodeDecodeError as exc:
        # The bytes before the refused ones decoded; their line ends counted as ASCII bytes (exact where ASCII is).
        line = lines.ends + lines.more(exc.object[: exc.start].decode("latin-1")) + 1
        # The bytes the codec refuses, no more: what follows them depends on where the download was cut.
        bad = exc.object[exc.start : exc.end].hex(" ")
        raise BadExport(
            "encoding",
            f"line {line}: bytes {bad} are not valid {encoding}; the module's encoding is {encoding} "
            "(set `encoding` in its definition if the third party writes another)",
        ) from None


class _Clock:
    """Charges to ``parse`` the time between restarts, less what the upstream stages charged meanwhile."""

    _UPSTREAM = ("unzip", "decode_text")

    def __init__(self, timings: Timings) -> None:
        self._seconds = timings.seconds
        self.restart()

    def _upstream(self) -> float:
        return sum(self._seconds.get(stage, 0.0) for stage in self._UPSTREAM)

    def restart(self) -> None:
        self._started = time.perf_counter()
        self._upstream_at_start = self._upstream()

    def lap(self) -> None:
        spent = time.perf_counter() - self._started - (self._upstream() - self._upstream_at_start)
        self._seconds["parse"] = self._seconds.get("parse", 0.0) + spent


class _TextReader:
    """What aiocsv reads from: ``await read(n)`` returning the next decoded chunk, "" at the end.

    It counts the line ends it hands over (LF, CRLF or CR), so the parser's last line can be checked
    against the file's. aiocsv 1.4 drops a file's last record when the file ends with a lone CR (a file
    with CR-only line ends); ending such a file with CRLF instead reads as Python's csv module reads it.
    """

    def __init__(self, texts: AsyncIterator[str]) -> None:
        self._texts = texts
        self._last = ""
        self.line_ends = 0

    async def read(self, _: int) -> str:
        try:
            text = await anext(self._texts)
        except StopAsyncIteration:
            if self._last == "\r":
                self._last = "\n"
                return "\n"
            return ""
        self.line_ends += text.count("\n") + text.count("\r") - text.count("\r\n")
        if self._last == "\r" and text.startswith("\n"):
            self.line_ends -= 1
        self._last = text[-1:]
        return text


class CsvRecords:
    """The header, then the data records in batches; blank lines are skipped."""

    def __init__(self, texts: AsyncIterator[str], batch_rows: int, max_field_chars: int) -> None:
        # aiocsv reads csv.field_size_limit() once, when the parser is created.
        csv.field_size_limit(max_field_chars)
        self._source = _TextReader(texts)
        self._reader = aiocsv.AsyncReader(self._source)
        self._batch_rows = batch_rows
        self._max_field = max_field_chars
        self._last_line = 0
        self._last_start = 1

    @property
    def last_record_line(self) -> int:
        """The line the last record read starts on."""
        return self._last_start

    async def header(self) -> list[str]:
        """The first non-blank record; an empty file has none."""
        async for record in self._records():
            return record
        raise BadExport("empty_file", "the CSV file is empty: no header, no rows")

    async def batches(self, timings: Timings) -> AsyncIterator[Batch]:
        """Records in batches of ``batch_rows``, timing the parser's own work as ``parse``.
        Between two batches nothing here waits on I/O (the zip is on local disk), so the
        time a batch takes is CPU spent here and upstream; the upstream stages time themselves.
        """
        clock = _Clock(timings)
        while True:
            batch = await self._fill(Batch())
            clock.lap()
            if not batch.records:
                break
            self._last_start = batch.lines[-1]
            yield batch
            clock.restart()
        if self._reader.line_num < self._source.line_ends:
            # The parser did not read to the file's last line: never import (or delete by) part of a file.
            # (aiocsv's line_num runs one ahead after a CR it looked past, never behind: so "<", not "!=".)
            raise BadExport(
                "incomplete_parse",
                f"the CSV parser stopped at line {self._reader.line_num} of {self._source.line_ends}; "
                "nothing was imported",
            )

    async def _fill(self, batch: Batch) -> Batch:
        # One loop for a whole batch: an async generator per record would cost ~0.5 s per million rows.
        reader, lines, records, size = self._reader, batch.lines, batch.records, self._batch_rows
        last = self._last_line
        try:
            while len(records) < size:
                record = await anext(reader)
                if record:
                    lines.append(last + 1)
                    records.append(record)
                last = reader.line_num
        except StopAsyncIteration:
            pass
        except csv.Error as exc:
            self._last_line = last
            raise self._malformed(str(exc)) from None
        self._last_line = last
        return batch

    async def _records(self) -> AsyncIterator[list[str]]:
        reader = self._reader
        while True:
            try:
                record = await anext(reader)
            except StopAsyncIteration:
                return
            except csv.Error as exc:
                raise self._malformed(str(exc)) from None
            self._last_line = reader.line_num
            if record:
                yield record

    def _malformed(self, error: str) -> BadExport:
        line = self._last_line + 1
        if "field larger than field limit" in error:
            return BadExport(
                "field_too_large",
                f"line {line}: a field is longer than {self._max_field} characters (IMPORTER_MAX_FIELD_CHARS)",
            )
        return BadExport("malformed_csv", f"line {line}: malformed CSV ({error})")
