"""The careful path's first load at the byte level: records that surely fit go to COPY as the file's own bytes.

Profiling the careful path (docs/benchmarks.md) found most of the worker's time in parsing every record
with aiocsv (41%) and routing the parsed values (33%), for files where 99.5% of the records are fine. So
the bytes are split into records by the definition here, and each run of records is checked by one
compiled regular expression (:func:`record_patterns`): the header's number of fields, each of them bare
or quoted as COPY reads it alike, each value matching what its column's type surely reads (careful_copy's
``SURE``), no required value empty, no NUL. Records that match are the file's bytes and go to
``COPY ... FORMAT csv`` into the table as they are: nothing parsed in Python, nothing written again.
The rest, about as many as the file has bad rows, are cut out by the definition's byte reader
(csv_fields.read_record) and read by the careful path's own reader (aiocsv) and validator, with the line
each starts on, so the rejects are those of a careful path that parses every record.

The regular expression only routes: PostgreSQL's input functions read every value that goes by COPY (a
generated test holds the patterns to them), and what this reading cannot vouch for gives up the direct
load (:class:`NotDirect`), after which the careful path reads the whole file again and gives its exact
answer: bytes the encoding refuses, a field longer than the limit, a quoted field never closed, a record
aiocsv reads otherwise than the byte reader. Only encodings whose comma, quote and line ends are single
bytes that never occur inside a character take this road (csv_copy.PG_ENCODINGS, as for the fast path).

Line numbers are aiocsv's: lines as it counts them, where a record or blank line ending in a lone CR
followed by a blank line that starts with CR counts one more (aiocsv looks past the CR to see whether an
LF follows, and counts the CR it looked at twice).

Hand-written because no library reads CSV records at the byte level and says which ones a pattern
matches; the work is a few C-speed calls per run of sure records (regular expression, ``count``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.importer.careful_copy import SURE, NotDirect
from services.importer.csv_fields import LINE_END, read_record, runs_fit
from services.importer.csv_scan import MAX_PENDING, whole_lines
from services.importer.csv_stream import Batch, CsvRecords, TextSeen
from services.importer.errors import BadExport
from services.importer.merge import MergePlan
from services.importer.stats import Tally, Timings
from services.importer.streams import prefetch
from services.importer.validate import Layout, Rejects, Row, validate

_UTF8_BOM = b"\xef\xbb\xbf"
# A text value COPY reads as the definition does: bare without quote, comma, line end or NUL; or quoted from
# the field's start to its end with quotes doubled inside. "FLAT": no line break inside, so a run of such
# records has one line end per record, which ``count`` then counts.
_BARE = rb'[^",\r\n\x00]'
_QUOTED_FLAT = rb'"(?:[^"\x00\r\n]++|"")*+"'
_QUOTED_ANY = rb'"(?:[^"\x00]++|"")*+"'
_QUOTED_FLAT_NONEMPTY = rb'"(?:[^"\x00\r\n]++|"")++"'
_QUOTED_ANY_NONEMPTY = rb'"(?:[^"\x00]++|"")++"'


@dataclass(frozen=True)
class Patterns:
    """A run of sure one-line records (from a position), and one sure record that may span lines."""

    run: re.Pattern[bytes]
    one: re.Pattern[bytes]


def record_patterns(plan: MergePlan, eol: bytes) -> Patterns | None:
    """The patterns for ``plan``'s columns (the file's fields, in order) and line end, or None (a type without one)."""
    flat, any_ = [], []
    for name in plan.columns:
        column = plan.module.column(name)
        required = plan.module.is_required(column)
        if column.type == "text":
            if required:
                flat.append(rb"(?:" + _BARE + rb"++|" + _QUOTED_FLAT_NONEMPTY + rb")")
                any_.append(rb"(?:" + _BARE + rb"++|" + _QUOTED_ANY_NONEMPTY + rb")")
            else:
                flat.append(rb"(?:" + _BARE + rb"++|" + _QUOTED_FLAT + rb")?+")
                any_.append(rb"(?:" + _BARE + rb"++|" + _QUOTED_ANY + rb")?+")
            continue
        pattern = SURE.get(column.type)
        if pattern is None:
            return None
        value = rb"(?>" + pattern.encode() + rb")" + (b"" if required else b"?+")
        flat.append(value)
        any_.append(value)
    # One field: a record must not be a blank line (skipped) or a line of only \. (COPY's end of data).
    start = rb"(?![\r\n]|\\\.(?:[\r\n]|\Z))" if len(plan.columns) == 1 else b""
    end = re.escape(eol)
    return Patterns(
        re.compile(rb"(?:" + start + b",".join(flat) + end + rb")*+"),
        re.compile(start + b",".join(any_) + end),
    )


def line_ends(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


@dataclass
class Doubtful:
    """Records the patterns do not vouch for: the line each starts on, and its bytes without the line end."""

    lines: list[int] = field(default_factory=list)
    spans: list[bytes] = field(default_factory=list)


class RecordRouter:
    """Feed it the file's bytes: it returns the bytes of the sure records, and keeps the doubtful ones aside.

    ``sure`` counts the sure records returned; every other record after the header is in ``doubtful``.
    """

    def __init__(self, plan: MergePlan, max_chars: int) -> None:
        self.sure = 0
        self.doubtful = Doubtful()
        self._plan = plan
        self._max = max_chars
        self._patterns: Patterns | None = None
        self._lines = 0  # aiocsv's line number at the end of what has been read
        self._last = 10  # the byte before what is pending (LF: the file starts at a line start)
        self._eol = b"\n"  # the header's line end
        self._pending = b""
        self._started = False

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        if not self._started and (chunk or final):
            self._started = True
            chunk = chunk.removeprefix(_UTF8_BOM)
        buf = self._pending + chunk
        cut = len(buf) if final else whole_lines(buf)
        if final and buf and buf[-1] not in b"\r\n":
            buf += self._eol  # the last record needs no line end; COPY gets the file's
            cut = len(buf)
        if cut <= 0:
            return self._hold(buf)
        head = buf[:cut]
        pos, out = self._read(head)
        if pos:
            self._last = head[pos - 1]
        self._hold(head[pos:] + buf[cut:])
        if final and self._pending:
            raise NotDirect("the file ends inside a record (a quoted field never closed)")
        return out

    def _hold(self, pending: bytes) -> bytes:
        if len(pending) > MAX_PENDING:
            raise NotDirect(f"a record longer than {MAX_PENDING} bytes")
        self._pending = pending
        return b""

    def _read(self, head: bytes) -> tuple[int, bytes]:
        """Read ``head`` (whole lines) from its start; returns where the records read end, and the sure bytes."""
        pos, end, view = 0, len(head), memoryview(head)
        if self._patterns is None:
            pos = self._header(head)
            if self._patterns is None:
                return pos, b""
        sure: list[memoryview] = []
        start = pos
        while pos < end:
            pos = self._sure(head, pos)
            if pos >= end:
                break
            if pos > start:
                sure.append(view[start:pos])
            skipped = self._other(head, pos)
            if skipped is None:
                return pos, b"".join(sure)
            pos = start = skipped
        if pos > start:
            sure.append(view[start:pos])
        return pos, b"".join(sure)

    def _header(self, head: bytes) -> int:
        pos = self._blank_lines(head, 0)
        record = read_record(head, pos) if pos < len(head) else None
        if record is None:
            return pos
        end, _, eol = record
        patterns = record_patterns(self._plan, eol)
        if patterns is None:
            raise NotDirect("a column's type has no pattern")
        self._patterns, self._eol = patterns, eol
        self._lines += line_ends(head[pos:end])
        return end

    def _sure(self, head: bytes, pos: int) -> int:
        """Past the sure records from ``pos``: runs of one-line ones, and ones with line breaks in quotes."""
        patterns, limit = self._patterns, self._max
        assert patterns is not None
        while True:
            end = patterns.run.match(head, pos).end()  # type: ignore[union-attr]
            if end > pos:
                separator = head[end - 1 : end]  # the file's line end, or its last byte: one per record here
                if end - pos > limit and not runs_fit(head[pos:end], separator, limit):
                    raise NotDirect("a record longer than the field limit")
                n = head.count(separator, pos, end)
                self.sure += n
                self._lines += n
                pos = end
            one = patterns.one.match(head, pos)
            if one is None:
                return pos
            if one.end() - pos > limit:
                raise NotDirect("a record longer than the field limit")
            self.sure += 1
            self._lines += line_ends(one.group())
            pos = one.end()

    def _other(self, head: bytes, pos: int) -> int | None:
        """Past the blank lines and the one doubtful record at ``pos``; None if the record goes on past ``head``."""
        after = self._blank_lines(head, pos)
        if after > pos:
            return after
        record = read_record(head, pos)
        if record is None:
            return None
        end, _, eol = record
        self.doubtful.lines.append(self._lines + 1)
        self.doubtful.spans.append(head[pos : end - len(eol)])
        self._lines += line_ends(head[pos:end])
        return end

    def _blank_lines(self, head: bytes, pos: int) -> int:
        while pos < len(head) and head[pos] in b"\r\n":
            if head[pos] == 13 and (head[pos - 1] if pos else self._last) == 13:
                self._lines += 1  # aiocsv counts the CR it looked past twice
            pos = LINE_END.match(head, pos).end()  # type: ignore[union-attr]
            self._lines += 1
        return pos

    def take_doubtful(self) -> Doubtful:
        doubtful, self.doubtful = self.doubtful, Doubtful()
        return doubtful


# Validate looks for NULs in a record only once one has passed; here every record it sees is a doubtful one.
_NUL_SEEN = TextSeen(saw_nul=True)


@dataclass
class ByteSplit:
    """The file's bytes cut into the sure records' bytes (for COPY into the table) and rows held back for staging.

    The same shape as careful_copy.Split (``segment``, ``held``, ``direct``, ``staged``, ``done``), which
    ``copy_direct`` drives; held rows are in the staging layout (fields, ``_n``, ``_line``).
    """

    chunks: AsyncIterator[bytes]
    router: RecordRouter
    layout: Layout
    rejects: Rejects
    read: Tally
    hold: int
    max_chars: int
    encoding: str  # the file's, as Python names it (the doubtful records are decoded)
    copy_encoding: str  # the same, as PostgreSQL names it (the sure records go as bytes)
    held: list[Row] = field(default_factory=list)
    direct: int = 0
    staged: int = 0
    done: bool = False

    _routed: AsyncIterator[tuple[bytes, int, list[Row]]] | None = None

    async def segment(self, timings: Timings) -> AsyncIterator[bytes]:
        """The sure records' bytes until the held-back rows fill a chunk or the file ends."""
        if self._routed is None:
            # A chunk ahead: the next one is routed while COPY's writes wait on PostgreSQL.
            self._routed = prefetch(self._route(timings), depth=1)
        while len(self.held) < self.hold:
            try:
                data, sure, rows = await anext(self._routed)
            except StopAsyncIteration:
                self.done = True
                return
            self.direct += sure
            for row in rows:
                # Numbered 1, 2, ... in file order: the sorting out walks _n ranges, and dense ones are cheap.
                row[-2] = self.staged + len(self.held) + 1
                self.held.append(row)
            if data:
                yield data

    async def aclose(self) -> None:
        if self._routed is not None:
            await self._routed.aclose()  # type: ignore[attr-defined]
        await self.chunks.aclose()  # type: ignore[attr-defined]

    async def _route(self, timings: Timings) -> AsyncIterator[tuple[bytes, int, list[Row]]]:
        """Per chunk: the sure records' bytes, how many they are, and the doubtful ones' rows (rejects kept)."""
        final = False
        while not final:
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                chunk, final = b"", True
            with timings.timed("route"):
                data = self.router.feed(chunk, final=final)
                sure, self.router.sure = self.router.sure, 0
            self.read.n += sure
            yield data, sure, await self._doubtful_rows(timings)

    async def _doubtful_rows(self, timings: Timings) -> list[Row]:
        doubtful = self.router.take_doubtful()
        if not doubtful.lines:
            return []
        records = await self._parse(doubtful.spans, timings)
        batch = _once(Batch(doubtful.lines, records))
        return [row async for rows in validate(batch, self.layout, self.rejects, _NUL_SEEN, timings, self.read)
                for row in rows]  # fmt: skip

    async def _parse(self, spans: list[bytes], timings: Timings) -> list[list[str]]:
        """The doubtful records as the careful parser (aiocsv) reads them, one for each span, or NotDirect."""
        try:
            text = "\n".join(span.decode(self.encoding) for span in spans) + "\n"
            records = CsvRecords(_once(text), len(spans) + 1, self.max_chars)
            got = [record async for batch in records.batches(timings) for record in batch.records]
        except (UnicodeDecodeError, BadExport) as exc:
            raise NotDirect(f"a doubtful record: {exc}") from None
        if len(got) != len(spans):
            raise NotDirect(f"aiocsv read {len(got)} records where the bytes hold {len(spans)}")
        return got


async def _once(item: object) -> AsyncIterator:  # type: ignore[type-arg]
    yield item
