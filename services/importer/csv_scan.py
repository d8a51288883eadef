"""What may go to COPY: a byte scan, as the CSV streams to PostgreSQL, for what COPY reads differently.

The importer's definition of a CSV file is the careful path's (docs/importer.md,
"What a CSV file means"): Python's csv module, excel dialect. PostgreSQL's
``COPY ... FORMAT csv`` agrees with it on every file except these constructs,
which this scan looks for (each one was seen to differ, tests/importer/test_csv_paths.py):

- a line holding only ``\\.`` (COPY stops reading there: the rest of the file is lost);
- a quote that does not open a field (``5" screen``, `` "a"``): COPY starts a
  quoted section anywhere in a field, Python only at a field's start;
- a quote in the text after a closing quote (``"ab"c"d``; ``"ab"c`` alone is read alike, as ``abc``);
- a blank line (COPY reads a one-column file's blank line as a NULL row, Python skips it);
- a NUL byte (COPY refuses it; the careful path rejects just that row).

Line ends themselves are not a risk: COPY takes LF, CRLF or CR-only from the
first line and refuses a file that mixes them, so such a file falls back anyway.

Hand-written because no library answers "would these two CSV readers disagree".
The work is done in C, a few statements per 1 MiB chunk: the chunk's whole
lines have their well-formed quoted fields cut out by one compiled regular
expression (skipping from quote to quote), and what is left must hold no quote,
NUL, blank line or ``\\.`` line (``in`` and ``count``). Only a chunk that fails
that, or has no line end, goes through the exact tokenizer (one possessive
regular expression, no backtracking), which carries its state (an open quoted
field, a CR that may be half a CRLF) into the next chunk and names what it found.

The scan also counts records (line ends outside quoted fields, and a last line
without one), so the fast path can check that COPY read exactly as many rows
as the file holds before it trusts the result (and before it deletes missing rows).
"""

from __future__ import annotations

import re

# Tokens outside a quoted field that both readers read alike; quoted fields whose quotes sit at field edges.
_UNQUOTED = rb'[^"\r\n\x00\\]++'
_BACKSLASH = rb"\\(?=[^.])|(?<![\r\n])\\\.|\\\.(?=[^\r\n])"
_LINE_END = rb"(?<![\r\n])(?:\r\n|\n|\r(?=[^\n]))"
# Text after the closing quote (``"ab"c``) is read alike, as long as it holds no quote.
# (The opening quote comes first, then the look behind it, so a search can skip to the next quote in C.)
_QUOTED = rb'"(?<=[,\r\n]")(?:[^"\x00]++|"")*+"[^",\r\n\x00]*+(?=[,\r\n])'
_FLAT_QUOTED = rb'(?<=[,\r\n])"(?:[^"\x00\r\n]++|"")*+"[^",\r\n\x00]*+(?=[,\r\n])'
_SAFE = re.compile(rb"(?:" + b"|".join([_UNQUOTED, _QUOTED, _BACKSLASH, _LINE_END]) + rb")*+")
# The same, but quoted fields without line breaks: then every line end in the run ends a record.
_FLAT = re.compile(rb"(?:" + b"|".join([_UNQUOTED, _FLAT_QUOTED, _BACKSLASH, _LINE_END]) + rb")*+")
# What may stop a run at the end of a chunk and still be fine once the next chunk comes.
_PENDING = re.compile(rb'(?:(?<=[,\r\n])"(?:[^"\x00]++|"")*+(?:"[^",\r\n\x00]*+)?|\r|\\\.?)\Z')
_QUOTED_FIELD = re.compile(_QUOTED)
_ANY_QUOTED = re.compile(rb'"(?:[^"]++|"")*+"')
_END_OF_DATA = re.compile(rb"\n\\\.\n")
# An open quoted field longer than this is left to the careful path, which has the field limit.
MAX_PENDING = 64 << 20


class Untrusted(Exception):
    """The file holds a construct COPY reads differently from the careful parser; the message says which."""


class NeverClosed(Untrusted):
    """A quoted field opened at a field's start runs to the end of the file: the definition refuses the file."""


class CopyScan:
    """Feed it every chunk before COPY gets it, then :meth:`finish`; raises :class:`Untrusted`."""

    def __init__(self) -> None:
        self.records = 0  # records in the file so far, header included
        self._lines = 0
        self._context = b"\n"  # the byte before what is pending: the file starts at a line start
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        buf = self._pending + chunk
        if not self._whole_lines(buf):
            self._tokenize(self._context + buf)

    def _whole_lines(self, buf: bytes) -> bool:
        """The chunk's whole lines at C speed, or False to leave the chunk to the exact tokenizer."""
        cut = whole_lines(buf)
        if cut <= 0:
            return False
        records = clean_lines(self._context, buf[:cut])
        if records is None:
            return False
        self.records += records
        self._lines += _physical_lines(self._context, buf[:cut])
        self._context = buf[cut - 1 : cut]
        self._pending = buf[cut:]
        return True

    def finish(self) -> None:
        """The end of the file: what is still pending must read alike when the file ends there."""
        if self._pending:
            tail = self._pending
            self._pending = b""
            self._tokenize(self._context + tail + b"\n", final=True)
            # The virtual line end closed the last record, which the file left unterminated.
        elif self._context not in (b"\n", b"\r"):
            self.records += 1

    def _tokenize(self, buf: bytes, final: bool = False) -> None:
        end = flat = _FLAT.match(buf, 1).end()  # type: ignore[union-attr]
        if end < len(buf):
            end = _SAFE.match(buf, 1).end()  # type: ignore[union-attr]
        quoted = end > flat
        if end < len(buf) and (final or not _PENDING.match(buf, end)):
            self._refuse(buf, end)
        self._consumed(buf[1:end], quoted)
        self._pending = buf[end:]
        if len(self._pending) > MAX_PENDING:
            raise Untrusted(f"line {self._lines + 1}: a quoted field longer than {MAX_PENDING} bytes")
        if end > 1:
            self._context = buf[end - 1 : end]

    def _consumed(self, run: bytes, quoted: bool) -> None:
        if not run:
            return
        ends = run.count(b"\n") + run.count(b"\r") - run.count(b"\r\n")
        if self._context == b"\r" and run[:1] == b"\n":
            ends -= 1  # the second half of a CRLF whose CR ended the previous chunk
        self._lines += ends
        if quoted:
            bare = _ANY_QUOTED.sub(b"", run)
            ends = bare.count(b"\n") + bare.count(b"\r") - bare.count(b"\r\n")
        self.records += ends
        self._context = run[-1:]

    def _refuse(self, buf: bytes, end: int) -> None:
        line = self._lines + _line_ends(buf[1:end]) + 1
        what = buf[end : end + 1]
        if what == b"\x00":
            reason = "a NUL byte"
        elif what == b"\\":
            reason = "a line holding only \\. (COPY's end-of-data marker)"
        elif what in (b"\r", b"\n"):
            reason = "a blank line (COPY reads it as a row of one NULL)"
        elif buf[end - 1 : end] in (b",", b"\r", b"\n"):
            reason = "a quote after a closing quote"
        else:
            reason = "a quote inside an unquoted field"
        raise Untrusted(f"line {line}: {reason}")


def whole_lines(buf: bytes) -> int:
    """Where the last whole line of ``buf`` ends (0: it has none); a CR at its end may be half a CRLF and waits."""
    end = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
    return max(buf.rfind(b"\n", 0, end), buf.rfind(b"\r", 0, end)) + 1


def clean_lines(context: bytes, head: bytes) -> int | None:
    """How many records ``head`` (whole lines, after ``context``, its byte before) holds, if COPY reads it alike.

    Quoted fields whose quotes sit at field edges are cut out by one substitution; what is left must hold no
    quote, NUL, blank line or ``\\.`` line. None: the exact tokenizer (or the rewriter) must look.
    """
    head = context + head
    quoted = b'"' in head
    bare = _QUOTED_FIELD.sub(b"Q", head) if quoted else head
    if b'"' in bare or b"\x00" in bare:
        return None
    # One line end, one byte: then a blank line is b"\n\n" and the records are the b"\n"s (less the context's).
    if b"\r" in bare:
        bare = bare.replace(b"\r\n", b"\n")
        if b"\r" in bare:
            bare = bare.replace(b"\r", b"\n")
    if b"\n\n" in bare or (b"\\." in bare and _END_OF_DATA.search(bare)):
        return None
    # The context never is the CR of a CRLF whose LF starts the head (such a CR waits in the pending bytes).
    return bare.count(b"\n") - (context in (b"\n", b"\r"))


def _physical_lines(context: bytes, head: bytes) -> int:
    """Lines, for messages (line ends inside quotes too); a file that mixes LF and CR is refused by COPY anyway."""
    return (head.count(b"\n") or head.count(b"\r")) if b'"' in head else _line_ends(head)


def _line_ends(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
