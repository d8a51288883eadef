"""Fields by the definition at the byte level, and the field limit checked on them while the bytes stream to COPY.

The careful parser refuses a file with a field longer than IMPORTER_MAX_FIELD_CHARS
characters, in any column, ignored ones included. The fast path used to ask
PostgreSQL afterwards (``max(char_length(...))`` over every row COPY wrote: half a
second per million rows, and only for the text columns). It now knows while the
bytes pass: a field holds no more characters than bytes, and no more bytes than
its record, or, when it is quoted, than its quoted text. So a chunk is settled by
lengths found at C speed (``rfind`` from one record end to the next, the length of
the quoted text); only a chunk holding a record longer than the limit is read
field by field here, and a field longer than the limit in bytes has its characters
counted. The answer is the careful parser's: a field of exactly the limit passes.

Hand-written for the same reason as the scan (csv_scan.py): no library reads CSV
at the byte level without decoding, and decoding every chunk costs what this saves.
"""

from __future__ import annotations

import re

from services.importer.csv_scan import _QUOTED_FIELD

# A field by the definition: quoted (``""`` a quote inside), then any text up to the next comma or line end,
# where a quote is a character; or bare, where a quote is a character too.
_QUOTED = re.compile(rb'"((?:[^"]++|"")*+)"([^,\r\n]*+)')
_BARE = re.compile(rb"[^,\r\n]*+")
LINE_END = re.compile(rb"\r\n|\n|\r")


class FieldTooLong(Exception):
    """A field is longer than IMPORTER_MAX_FIELD_CHARS; the careful path names its line."""


def read_record(head: bytes, pos: int) -> tuple[int, list[bytes], bytes] | None:
    """The record at ``pos`` by the definition: where it ends, its values, its line end; None if it runs past."""
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
        line_end = LINE_END.match(head, pos)
        if line_end is None:
            return None
        return line_end.end(), fields, line_end.group()


def runs_fit(data: bytes, separator: bytes, limit: int) -> bool:
    """Whether no run of ``data`` between two ``separator`` bytes is longer than ``limit``.

    One ``rfind`` per ``limit`` bytes: the last separator within reach of where the run starts.
    """
    pos, end = 0, len(data)
    while end - pos > limit:
        cut = data.rfind(separator, pos, pos + limit + 1)
        if cut < 0:
            return False
        pos = cut + 1
    return True


class FieldLimit:
    """The careful parser's field limit, for the bytes of a file in a PostgreSQL encoding (UTF8: multibyte)."""

    def __init__(self, max_chars: int, encoding: str) -> None:
        self.max_chars = max_chars
        self._utf8 = encoding == "UTF8"

    def clean_chunk(self, head: bytes, eol: bytes, buf: bytes = b"", bare: bytes = b"", fields: int = 0) -> None:
        """``head``: whole records COPY reads alike, in the file whose line end is ``eol``.

        ``buf`` is ``eol + head``, ``bare`` the same with its ``fields`` quoted fields cut to one byte each
        (csv_scan's well-formed quoted fields, so every line end left in ``bare`` ends a record).
        """
        limit = self.max_chars
        if len(head) <= limit:
            return
        if not buf:
            buf = eol + head
            bare, fields = _QUOTED_FIELD.subn(b"Q", buf)
        quoted_bytes = len(buf) - len(bare) + fields
        if quoted_bytes > limit and max(map(len, _QUOTED_FIELD.findall(buf))) > limit:
            self.records(head)
        elif not runs_fit(bare, eol[-1:], limit):
            self.records(head)

    def records(self, head: bytes) -> None:
        """Every field of ``head`` (whole records from a record's start), read one by one: the exact answer."""
        pos, end = 0, len(head)
        while pos < end:
            if head[pos] in b"\r\n":
                pos += 1  # a blank line, which the definition skips
                continue
            record = read_record(head, pos)
            if record is None:
                return  # a quoted field that goes on past ``head``: checked with the next bytes
            pos, fields, _ = record
            self.fields(fields)

    def fields(self, fields: list[bytes]) -> None:
        limit = self.max_chars
        for value in fields:
            if len(value) > limit:
                chars = len(value.decode("utf-8", "replace")) if self._utf8 else len(value)
                if chars > limit:
                    raise FieldTooLong(f"a field has {chars} characters (IMPORTER_MAX_FIELD_CHARS is {limit})")
