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
row), a quoted field never closed or an odd number of quotes in the file (which
the careful path refuses as malformed), a record longer than 64 MiB.

Bytes, not text: the quote, the comma and CR/LF are single bytes that never occur
inside a character in any encoding COPY is given here (UTF-8, Latin-1/9,
Windows-125x), so the file need not be decoded. Hand-written for the same reason
as the scan; a record is split by two compiled regular expressions, and lines
without a quote are passed on without being split at all.
"""

from __future__ import annotations

import re

from services.importer.csv_scan import _QUOTED_FIELD, MAX_PENDING, Untrusted, clean_lines, whole_lines

# A field by the definition: quoted (``""`` a quote inside), then any text up to the next comma or line end,
# where a quote is a character; or bare, where a quote is a character too.
_QUOTED = re.compile(rb'"((?:[^"]++|"")*+)"([^,\r\n]*+)')
_BARE = re.compile(rb"[^,\r\n]*+")
_LINE_END = re.compile(rb"\r\n|\n|\r")
_NEEDS_QUOTES = re.compile(rb'[",\r\n]')
# What COPY would read differently, once the well-formed quoted fields are blanked out (csv_scan.clean_lines).
_SPOT = re.compile(rb'"|\x00|\n\n|\r\r|\n\r|[\r\n]\\\.[\r\n]')


def _blanked(quoted: re.Match[bytes]) -> bytes:
    return b"Q" * (quoted.end() - quoted.start())


def _line_ends(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


class CopyFeed:
    """Feed it every chunk; it returns the bytes to give COPY (which may lag a line behind), then :meth:`finish`."""

    def __init__(self) -> None:
        self.records = 0  # records in the file so far, header included
        self.rewritten = 0  # records written again for COPY
        self._context = b"\n"
        self._pending = b""
        self._eol = b""  # the file's line end (COPY wants one kind): the first one it has
        self._quotes = 0

    def feed(self, chunk: bytes) -> bytes:
        self._quotes += chunk.count(b'"')
        buf = self._pending + chunk
        cut = whole_lines(buf)
        if cut <= 0:
            self._hold(buf)
            return b""
        head, tail = buf[:cut], buf[cut:]
        if not self._eol:
            self._eol = _LINE_END.search(head).group()  # type: ignore[union-attr]
        counted = clean_lines(self._context, head)
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
        if self._quotes % 2:
            # The careful path refuses such a file as a quoted field never closed (docs/importer.md).
            raise Untrusted("the file has an odd number of quote characters")
        if not self._pending:
            return b""
        eol = self._eol or b"\n"
        tail = self._pending + (b"" if self._pending.endswith((b"\n", b"\r")) else eol)
        self._pending = b""
        out, used = self._requote(tail)
        if used < len(tail):
            raise Untrusted(f"record {self.records + 1}: a quoted field is never closed")
        return out

    def _hold(self, pending: bytes) -> None:
        if len(pending) > MAX_PENDING:
            raise Untrusted(f"record {self.records + 1}: longer than {MAX_PENDING} bytes")
        self._pending = pending

    def _requote(self, head: bytes) -> tuple[bytes, int]:
        """Whole records of ``head`` (which starts at a record's start), as COPY must get them, and the bytes used.

        Only the records around a spot COPY would misread are read and written again; the stretches between
        go on as they are. The spots are found at C speed in a copy of the chunk whose well-formed quoted
        fields are blanked out (same length), where every line end left is a record's end.
        """
        bare = _QUOTED_FIELD.sub(_blanked, self._context + head)  # bare[i + 1] is head[i]
        out: list[bytes] = []
        pos, end = 0, len(head)
        while pos < end:
            spot = _SPOT.search(bare, pos)  # from the line end before head[pos]: it may start a blank line
            if spot is None:
                out.append(head[pos:])
                self.records += _line_ends(bare[pos + 1 :])
                return b"".join(out), end
            start = max(bare.rfind(b"\n", 0, spot.start()), bare.rfind(b"\r", 0, spot.start()))  # head index + 1
            if bare[start : start + 2] == b"\r\n":
                start += 1  # a CRLF is one line end: the record starts after its LF
            start = max(start, pos)
            out.append(head[pos:start])
            self.records += _line_ends(bare[pos + 1 : start + 1])
            pos = start
            while pos < spot.end() - 1:
                if head[pos : pos + 1] in (b"\r", b"\n"):
                    pos = _LINE_END.match(head, pos).end()  # type: ignore[union-attr]  # a blank line: skipped
                    continue
                record = self._record(head, pos)
                if record is None:
                    return b"".join(out), pos  # a quoted field that goes on in the next chunk
                pos, written = record
                out.append(written)
        return b"".join(out), pos

    def _record(self, head: bytes, pos: int) -> tuple[int, bytes] | None:
        """The record at ``pos`` by the definition: where it ends, and how COPY must get it."""
        fields: list[bytes] = []
        while True:
            if head.startswith(b'"', pos):
                quoted = _QUOTED.match(head, pos)
                if quoted is None:
                    return None
                fields.append(quoted.group(1).replace(b'""', b'"') + quoted.group(2))
                pos = quoted.end()
            else:
                bare = _BARE.match(head, pos)
                assert bare is not None
                fields.append(bare.group())
                pos = bare.end()
            if head.startswith(b",", pos):
                pos += 1
                continue
            line_end = _LINE_END.match(head, pos)
            if line_end is None:
                return None
            return line_end.end(), self._written(fields, line_end.group())

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
