"""What goes to COPY: the file's bytes, with only the records COPY would misread written again so it cannot.

The scan (csv_scan.py) finds the constructs PostgreSQL's COPY reads differently
from the importer's definition of a CSV file. Most chunks hold none and go to
COPY as they are. In a chunk that holds one, each record is read by the
definition (Python's csv module, excel dialect) at the byte level and, where
COPY would read it differently, written again: every field that needs it quoted
(``5" screen`` is sent as ``"5"" screen"``, a field that starts with a space and
a quote is quoted whole, a ``\\.`` line is sent quoted), blank lines dropped (the definition skips them). The
values COPY then reads are the definition's, so a valid but unusual file (an
inch mark in a product name, a blank line) still loads at COPY's speed.

What cannot be written for COPY raises :class:`Untrusted` and the run takes the
careful path: a NUL (PostgreSQL text cannot hold it; the careful path rejects the
row), a quoted field never closed (:class:`NeverClosed`, which the careful path
refuses as malformed), a record longer than 64 MiB. An odd number of quotes is
no sign of trouble by itself: ``5" screen`` holds one. A field
longer than the field limit raises :class:`FieldTooLong` (csv_fields.py).

Bytes, not text: the quote, the comma and CR/LF are single bytes that never occur
inside a character in any encoding COPY is given here (UTF-8, Latin-1/9,
Windows-125x), so the file need not be decoded. Hand-written for the same reason
as the scan. The feed runs in the event loop between the chunks COPY sends, so its
cost per chunk is what COPY may wait for: every pass over a chunk is a C-speed
``bytes`` method (``in``/``find`` are memchr, ``count`` a byte loop), and only the
records around a spot are read one by one in Python.

The file's line end (its header's) lets a chunk after the first be checked in a few
passes: COPY refuses a line end of another kind outside quoted fields ("literal
carriage return found in data"), so such a file falls back whatever the feed
counted, and where COPY accepts the file every record end it saw is of that kind.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterator
from itertools import repeat

from services.importer.csv_fields import LINE_END, FieldLimit, read_record, runs_fit
from services.importer.csv_scan import (
    _QUOTED,
    _QUOTED_FIELD,
    MAX_PENDING,
    NeverClosed,
    Untrusted,
    clean_lines,
    whole_lines,
)

_NEEDS_QUOTES = re.compile(rb'[",\r\n]')
_QUOTED_PART = re.compile(b"(" + _QUOTED + b")")
# Inside a well-formed quoted field, the bytes that would look like a spot or a record end.
_BLANK = bytes.maketrans(b'"\r\n', b"QQQ")
# What COPY would read differently, once the well-formed quoted fields are blanked out: a quote, a NUL, a blank
# line (two line ends in a row; a CRLF is one) and a line holding only ``\.`` (found by its ``\.``).
_SPOTS = (b'"', b"\x00", b"\n\n", b"\r\r", b"\n\r")
_LINE_ENDS = (b"\r", b"\n")
# Per line end of a file (its header's): a blank line, and a line holding only ``\.``, in a chunk's bare lines.
_EOL_SPOTS = {
    eol: (re.compile(re.escape(eol + eol)), re.compile(re.escape(eol + b"\\." + eol)))
    for eol in (b"\n", b"\r\n", b"\r")
}


def _blanked(data: bytes) -> bytes:
    """``data`` with its well-formed quoted fields' quotes and line ends blanked out (same length): C-level passes."""
    parts = _QUOTED_PART.split(data)
    parts[1::2] = map(bytes.translate, parts[1::2], repeat(_BLANK))
    return b"".join(parts)


def _line_ends(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _spots(bare: bytes, eol: bytes) -> Iterator[tuple[int, int]]:
    """Every spot of ``bare`` as (start, end), in order (overlapping ones too).

    Given the file's line end, a blank line is two of it in a row (one of another kind makes COPY refuse the
    file), found by a search for both: as a spot, it is the end of the first and the start of the second.
    """
    if not eol:
        return heapq.merge(*(_every(bare, spot) for spot in _SPOTS), _end_of_data_lines(bare))
    return heapq.merge(_every(bare, b'"'), _every(bare, b"\x00"), _blank_lines(bare, eol), _end_of_data_lines(bare))


def _blank_lines(bare: bytes, eol: bytes) -> Iterator[tuple[int, int]]:
    if len(eol) == 2 and bare.startswith(b"\n\r\n"):
        yield 0, 2  # the chunk starts with a blank line (bare[0] is the LF before it)
    for at, _ in _every(bare, eol + eol):
        yield at + len(eol) - 1, at + len(eol) + 1


def _every(bare: bytes, spot: bytes) -> Iterator[tuple[int, int]]:
    at = bare.find(spot)
    while at >= 0:
        yield at, at + len(spot)
        at = bare.find(spot, at + 1)


def _end_of_data_lines(bare: bytes) -> Iterator[tuple[int, int]]:
    at = bare.find(b"\\", 1)  # one byte: memchr (a search for two is slow where "." is common)
    while at >= 0:
        if bare[at + 1 : at + 2] == b"." and bare[at - 1 : at] in _LINE_ENDS and bare[at + 2 : at + 3] in _LINE_ENDS:
            yield at, at + 3  # from the backslash: the record before it is not read again
        at = bare.find(b"\\", at + 1)


class CopyFeed:
    """Feed it every chunk; it returns the bytes to give COPY (which may lag a line behind), then :meth:`finish`."""

    def __init__(self, limit: FieldLimit | None = None, for_copy: bool = True) -> None:
        """``for_copy=False``: only read the file by the definition (records, a quote never closed) for the
        careful path: any line ends, mixed too, and NULs read as characters; what it returns is of no use."""
        self.records = 0  # records in the file so far, header included
        self.rewritten = 0  # records written again for COPY
        self._limit = limit or FieldLimit(MAX_PENDING, "UTF8")
        self._context = b"\n"
        self._pending = b""
        self._eol = b""  # the file's line end (its header's, which COPY goes by)
        self._for_copy = for_copy

    def feed(self, chunk: bytes) -> bytes:
        if not self._for_copy and b"\x00" in chunk:
            # To the definition a NUL is a character like any other (the careful path rejects its row); the
            # scans here stop at one, so it is read as another byte that neither ends nor quotes anything.
            chunk = chunk.replace(b"\x00", b"\x01")
        buf = self._pending + chunk
        cut = whole_lines(buf)
        if cut <= 0:
            self._hold(buf)
            return b""
        head, tail = buf[:cut], buf[cut:]
        if not self._eol and self._for_copy:
            self._eol = _header_line_end(head)
        counted = self._clean(head)
        if counted is not None:
            self.records += counted
            self._context = head[-1:]
            self._pending = tail
            return head
        out, used = self._requote(head)
        self._hold(head[used:] + tail)
        if used:
            self._context = head[used - 1 : used]
        return out

    def finish(self) -> bytes:
        """The end of the file: its last record, which may lack a line end (one is added for COPY)."""
        out, used, tail = b"", 0, b""
        if self._pending:
            eol = self._eol or b"\n"
            tail = self._pending + (b"" if self._pending.endswith(_LINE_ENDS) else eol)
            self._pending = b""
            out, used = self._requote(tail)
        if used < len(tail):
            raise NeverClosed(f"record {self.records + 1}: a quoted field is never closed")
        return out

    def _hold(self, pending: bytes) -> None:
        if len(pending) > MAX_PENDING:
            raise Untrusted(f"record {self.records + 1}: longer than {MAX_PENDING} bytes")
        self._pending = pending

    def _clean(self, head: bytes) -> int | None:
        """How many records ``head`` holds if COPY reads it as it is (fields within the limit); None: rewrite it.

        After the file's first chunk, in a few C-speed passes that know the file's line end: quoted fields cut to
        one byte, then no quote, NUL, blank line or ``\\.`` line may be left, and the records are that line
        end's count.
        """
        eol = self._eol
        if self.records == 0 or not eol:
            counted = clean_lines(self._context, head)
            if counted is not None:
                self._limit.clean_chunk(head, eol or b"\n")
            return counted
        buf = eol + head
        bare, fields = _QUOTED_FIELD.subn(b"Q", buf) if b'"' in buf else (buf, 0)
        if b'"' in bare or b"\x00" in bare or _blank_or_end_of_data(bare, eol):
            return None
        self._limit.clean_chunk(head, eol, buf, bare, fields)
        return bare.count(eol[-1:]) - 1

    def _requote(self, head: bytes) -> tuple[bytes, int]:
        """Whole records of ``head`` (which starts at a record's start), as COPY must get them, and the bytes used.

        Only the records around a spot COPY would misread are read and written again; the stretches between
        go on as they are. The spots are found at C speed in a copy of the chunk whose well-formed quoted
        fields are blanked out (same length), where every line end left is a record's end.
        """
        bare = _blanked(self._context + head)  # bare[i + 1] is head[i]
        count = self._counter(bare)
        out: list[bytes] = []
        pos, end = 0, len(head)
        for start, stop in _spots(bare, self._eol if self.records else b""):
            if start < pos:
                continue  # from the line end before head[pos]: a spot there may start a blank line
            spot = start
            start = max(bare.rfind(b"\n", 0, spot), bare.rfind(b"\r", 0, spot))  # head index + 1
            if bare[start : start + 2] == b"\r\n":
                start += 1  # a CRLF is one line end: the record starts after its LF
            start = max(start, pos)
            out.append(head[pos:start])
            self.records += count(pos + 1, start + 1)
            pos = start
            while pos < stop - 1:
                if head[pos : pos + 1] in _LINE_ENDS:
                    pos = LINE_END.match(head, pos).end()  # type: ignore[union-attr]  # a blank line: skipped
                    continue
                record = read_record(head, pos)
                if record is None:
                    return self._used(out, head, bare[: pos + 1], pos)  # a quoted field that goes on
                pos, fields, eol = record
                self._limit.fields(fields)
                out.append(self._written(fields, eol))
        out.append(head[pos:])
        self.records += count(pos + 1, end + 1)
        return self._used(out, head, bare, end)

    def _used(self, out: list[bytes], head: bytes, bare: bytes, used: int) -> tuple[bytes, int]:
        """What to send and the bytes used, once the stretches passed on as they are are within the field limit."""
        if not runs_fit(bare, self._eol[-1:] or b"\n", self._limit.max_chars):
            self._limit.records(head[:used])
        return b"".join(out), used

    def _counter(self, bare: bytes) -> Callable[[int, int], int]:
        """Records ending in ``bare[a:b]``: the file's line ends (see the module's docstring), or any kind at first."""
        if self.records and self._eol:
            separator = self._eol[-1:]
            return lambda a, b: bare.count(separator, a, b)
        return lambda a, b: _line_ends(bare[a:b])

    def _written(self, fields: list[bytes], eol: bytes) -> bytes:
        if any(b"\x00" in value for value in fields):
            raise Untrusted(f"record {self.records + 1}: a NUL byte")
        self.records += 1
        self.rewritten += 1
        quoted = [
            b'"' + value.replace(b'"', b'""') + b'"' if _NEEDS_QUOTES.search(value) or value == b"\\." else value
            for value in fields
        ]
        if quoted == [b""]:
            quoted = [b'""']  # a record of one empty field, not a blank line
        return b",".join(quoted) + eol


def _blank_or_end_of_data(bare: bytes, eol: bytes) -> bool:
    """Whether ``bare`` (whole lines after the header, starting with ``eol``, quoted fields cut out) holds a blank
    line or a line of only ``\\.``: ``eol`` twice, or ``\\.`` between two. (A line end of another kind makes COPY
    refuse the file, and COPY's row count is checked anyway.)

    Only that ``\\.`` is COPY's end-of-data marker: a chunk with a backslash-dot elsewhere (``C:\\.cache``, or a
    ``\\.`` line inside a quoted note) stays on this path; it went through ``clean_lines`` before (a file with one
    in every chunk: 4 × the feed's time). Compiled searches, not ``in``: a two-byte ``in`` (a blank line in an LF
    or CR-only file) took 3.3 ms per MiB here, the same search by ``re`` 1.2 ms.
    """
    blank, end_of_data = _EOL_SPOTS[eol]
    return blank.search(bare) is not None or (b"\\" in bare and end_of_data.search(bare) is not None)


def _header_line_end(head: bytes) -> bytes:
    """The line end of the file's first record by the definition (COPY takes its line end from there)."""
    pos = 0
    while head[pos : pos + 1] in _LINE_ENDS:
        pos = LINE_END.match(head, pos).end()  # type: ignore[union-attr]  # blank lines before the header
    record = read_record(head, pos)
    return record[2] if record is not None else b""
