"""A strict RFC 9112 reader of the caller's byte stream, walked in step with aiohttp's parser.

Why: llhttp (the C parser behind aiohttp) is lenient in places where a strict
reader is not. It reads ``GET /x\\r\\n`` as an HTTP/0.9 request line and the
lines after it as that request's headers, takes two spaces in a request line,
and accepts ``Transfer-Encoding: gzip, chunked``. Whenever two readers disagree
about what bytes mean, whoever reads them second (the provider, a cache, a
log) may be told a different story than the proxy was: the tenant whose
token goes out can be chosen by the bytes the proxy did not see as a header.

So every request head is read here first, over its raw bytes, by one
precompiled pattern of the RFC 9112 grammar (request line, field lines, CRLF
line ends only), and its framing is decided here: one ``Content-Length`` of
digits, or ``Transfer-Encoding`` of exactly ``chunked`` on HTTP/1.1, never
both; exactly one ``Host`` on HTTP/1.1. Only bytes that passed go on to the
parser: a head once complete, a body as it arrives (its chunk framing checked
as it goes). Each message the parser then produces must match the head read
here (method, target length, version, field count, framing); a mismatch is
refused too, so the two readers can never act on different readings.

Hand-written because no library reads HTTP/1.1 strictly at this cost: h11 is
strict about less (it accepts bare LF and folded lines) and, being pure
Python, would cost more than the rest of the proxy's server side per request.
The hot path is a ``find``, one ``fullmatch`` and one ``findall`` per head.
"""

from __future__ import annotations

import re
from collections import deque

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage

_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
# field-value: VCHAR, obs-text, SP and HTAB; never CR, LF, NUL or another control character.
_FIELD = _TCHAR + rb"+:[\t\x20-\x7e\x80-\xff]*\r\n"
_HEAD = re.compile(rb"(" + _TCHAR + rb"+) ([\x21-\x7e]+) HTTP/1\.([01])\r\n(?:" + _FIELD + rb")*\r\n")
_REQUEST_LINE = re.compile(_TCHAR + rb"+ [\x21-\x7e]+ HTTP/1\.[01]\r\n")
_FIELD_LINE = re.compile(_FIELD)
_FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding|host):[\t ]*([^\r]*)", re.IGNORECASE)
# What can never end well, found before the head is complete: a bare LF, a CR not before LF, a NUL.
_NEVER = re.compile(rb"(?<!\r)\n|\r(?=[^\n])|\x00")
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = rb"(?:[\t ]*;[\t ]*" + _TCHAR + rb"+(?:[\t ]*=[\t ]*(?:" + _TCHAR + rb"+|" + _QUOTED + rb"))?)*"
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})" + _CHUNK_EXT + rb"\r\n")
_DIGITS = re.compile(rb"[0-9]{1,18}")

_HEAD_STATE, _LENGTH, _CHUNK_LINE, _CHUNK_DATA, _CHUNK_END, _TRAILER = range(6)


class HeadRefused(HttpProcessingError):
    """A request the strict reading refuses: its status and a reason that never quotes the caller's bytes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(code=status, message=message)


# What the strict reading found in one head, which the parser's message must repeat: method, target length,
# version, number of field lines, chunked. A plain tuple: a dataclass cost a tenth of the reading's time.
Head = tuple[str, int, tuple[int, int], int, bool]


class StrictReader:
    """Walks the caller's bytes: which of them the parser may read now, and where the stream must stop."""

    def __init__(self, max_line_size: int, max_field_size: int, max_headers: int) -> None:
        self._max_line = max_line_size
        self._max_field = max_field_size
        self._max_headers = max_headers
        self._shortest_limit = min(max_line_size, max_field_size)
        self._max_head = max_line_size + max_headers * (max_field_size + 2) + 4
        self.heads: deque[Head] = deque()
        self._state = _HEAD_STATE
        self._left = 0  # body bytes still to come: of the Content-Length, or of the current chunk
        self._pending = b""  # an incomplete head (held back from the parser) or chunk line (already passed on)
        self._checked = 0  # how much of a held-back head was already checked

    def feed(self, data: bytes) -> tuple[bytes, HeadRefused | None]:
        """The bytes the parser may read now (held-back head bytes first), and the refusal that ends the stream."""
        if self._state == _HEAD_STATE and self._pending:
            data, self._pending = self._pending + data, b""
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _HEAD_STATE:
                pos, refusal = self._head(data, pos)
                if refusal is not None:
                    return data[:pos], refusal
            elif state == _LENGTH or state == _CHUNK_DATA:
                taken = min(self._left, end - pos)
                pos += taken
                self._left -= taken
                if not self._left:
                    self._state = _HEAD_STATE if state == _LENGTH else _CHUNK_END
            else:
                start = pos
                pos, refusal = self._chunk_framing(data, pos)
                if refusal is not None:
                    return data[:start], refusal
        if self._state == _HEAD_STATE and self._pending:
            return data[: end - len(self._pending)], None
        return data, None

    def agrees(self, message: RawRequestMessage) -> bool:
        """Whether the parser read the next head as it was read here."""
        if not self.heads:
            return False
        read = (message.method, len(message.path), message.version, len(message.raw_headers), message.chunked)
        return read == self.heads.popleft()

    def _head(self, data: bytes, pos: int) -> tuple[int, HeadRefused | None]:
        """Past one complete head; or to the end, the incomplete head held back; or the refusal at its start."""
        found = data.find(b"\r\n\r\n", pos + max(self._checked - 3, 0))
        if found < 0:
            refusal = self._check_partial(data, pos)
            if refusal is not None:
                return pos, refusal
            self._pending = data[pos:]
            self._checked = len(self._pending)
            return len(data), None
        self._checked = 0
        stop = found + 4
        head = data[pos:stop]
        if len(head) > self._shortest_limit:
            refusal = _too_long(head, self._max_line, self._max_field)
            if refusal is not None:
                return pos, refusal
        match = _HEAD.fullmatch(head)
        if match is None:
            return pos, HeadRefused(400, _diagnose(head))
        fields = head.count(b"\r\n") - 2
        if fields > self._max_headers:
            return pos, HeadRefused(431, f"more than {self._max_headers} header lines")
        target_start, target_end = match.span(2)
        if target_end - target_start == 1 and head[target_start] == 0x2A and match[1] != b"OPTIONS":
            return pos, HeadRefused(400, "the request target '*' is for OPTIONS only")
        version = (1, 1) if match[3] == b"1" else (1, 0)
        refusal = self._framing(head, version)
        if refusal is not None:
            return pos, refusal
        chunked = self._state == _CHUNK_LINE
        self.heads.append((match[1].decode(), target_end - target_start, version, fields, chunked))
        return stop, None

    def _framing(self, head: bytes, version: tuple[int, int]) -> HeadRefused | None:
        """How the body is framed, from the head alone; a refusal where that is in any doubt."""
        lengths, codings, hosts = _framing_fields(head)
        self._state = _HEAD_STATE
        if codings:
            refusal = _coding_refusal(lengths, codings, version)
            if refusal is not None:
                return refusal
            self._state = _CHUNK_LINE
        elif lengths:
            if len(lengths) > 1 or _DIGITS.fullmatch(lengths[0]) is None:
                return HeadRefused(400, "invalid Content-Length: one header, digits only")
            self._left = int(lengths[0])
            self._state = _LENGTH if self._left else _HEAD_STATE
        if hosts > 1:
            return HeadRefused(400, "more than one Host header")
        if not hosts and version == (1, 1):
            return HeadRefused(400, "an HTTP/1.1 request needs a Host header")
        return None

    def _check_partial(self, data: bytes, pos: int) -> HeadRefused | None:
        """An incomplete head: refused now where it can never become a valid one, else kept."""
        if _NEVER.search(data, pos + max(self._checked - 1, 0)) is not None:
            return HeadRefused(400, _diagnose(data[pos:]))
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            if len(data) - pos > self._max_line:
                return HeadRefused(414, f"the request line is longer than {self._max_line} bytes")
            return None
        if _REQUEST_LINE.fullmatch(data, pos, line_end + 2) is None:
            return HeadRefused(400, _diagnose(data[pos:]))
        if len(data) - data.rfind(b"\r\n") - 2 > self._max_field:
            return HeadRefused(431, f"a request header is longer than {self._max_field} bytes")
        if len(data) - pos > self._max_head:
            return HeadRefused(431, f"the request head is longer than {self._max_head} bytes")
        return None

    def _chunk_framing(self, data: bytes, pos: int) -> tuple[int, HeadRefused | None]:
        """One line of chunk framing (size line, data's CRLF, trailer), or what there is of it so far."""
        line_end = data.find(b"\n", pos)
        if line_end < 0:
            self._pending += data[pos:]
            if len(self._pending) > self._max_field:
                return pos, HeadRefused(400, "a chunk line of the request body is too long")
            return len(data), None
        line, self._pending = self._pending + data[pos : line_end + 1], b""
        if len(line) > self._max_field:
            return pos, HeadRefused(400, "a chunk line of the request body is too long")
        state = self._state
        if state == _CHUNK_END:
            if line != b"\r\n":
                return pos, HeadRefused(400, "a chunk of the request body does not end with CRLF")
            self._state = _CHUNK_LINE
        elif state == _CHUNK_LINE:
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                return pos, HeadRefused(400, "invalid chunk size line")
            self._left = int(match[1], 16)
            self._state = _CHUNK_DATA if self._left else _TRAILER
        elif line == b"\r\n":
            self._state = _HEAD_STATE
        else:
            # llhttp hands a chunked body's trailer fields to the next request on the connection as its
            # headers (aiohttp 3.14): 'X-Tenant-ID' there would pick that request's tenant.
            return pos, HeadRefused(400, "trailer fields after a chunked request body are not accepted")
        return line_end + 1, None


def _framing_fields(head: bytes) -> tuple[list[bytes], list[bytes], int]:
    """The Content-Length and Transfer-Encoding values of a head that matched the grammar, and how many Hosts."""
    lengths: list[bytes] = []
    codings: list[bytes] = []
    hosts = 0
    for name, value in _FRAMING.findall(head):
        name = name.lower()
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            lengths.append(value.rstrip(b"\t "))
        else:
            codings.append(value.rstrip(b"\t "))
    return lengths, codings, hosts


def _coding_refusal(lengths: list[bytes], codings: list[bytes], version: tuple[int, int]) -> HeadRefused | None:
    if version < (1, 1):  # RFC 9112 §6.1: the framing of such a request cannot be trusted
        return HeadRefused(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request")
    if lengths:
        return HeadRefused(400, "a request with both Content-Length and Transfer-Encoding is ambiguous")
    if len(codings) > 1 or codings[0].lower() != b"chunked":
        return HeadRefused(400, "Transfer-Encoding must be exactly 'chunked', in one header")
    return None


def _too_long(head: bytes, max_line: int, max_field: int) -> HeadRefused | None:
    lines = head.split(b"\r\n")
    if len(lines[0]) > max_line:
        return HeadRefused(414, f"the request line is longer than {max_line} bytes")
    if any(len(line) > max_field for line in lines[1:]):
        return HeadRefused(431, f"a request header is longer than {max_field} bytes")
    return None


def _diagnose(head: bytes) -> str:
    """What is wrong with a head the pattern refused, by line number; never the bytes themselves."""
    lines = head.split(b"\r\n")
    for number, line in enumerate(lines, 1):
        if b"\x00" in line:
            return f"a NUL byte in line {number} of the request head"
        if b"\r" in line or b"\n" in line:
            return f"a bare CR or LF in line {number} of the request head (lines end with CRLF)"
    wrong = _request_line_problem(lines[0])
    if wrong is not None:
        return wrong
    for number, line in enumerate(lines[1:-2], 2):
        wrong = _field_line_problem(line)
        if wrong is not None:
            return f"header line {number}: {wrong}"
    return "the request head is malformed"


def _request_line_problem(line: bytes) -> str | None:
    parts = line.split(b" ")
    if len(parts) != 3:
        return "the request line must be 'METHOD target HTTP/1.x', with single spaces"
    method, target, version = parts
    if re.fullmatch(_TCHAR + b"+", method) is None:
        return "invalid method in the request line"
    if re.fullmatch(rb"[\x21-\x7e]+", target) is None:
        return "invalid request target: visible ASCII characters only"
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        return "invalid HTTP version: HTTP/1.0 and HTTP/1.1 are served"
    return None


def _field_line_problem(line: bytes) -> str | None:
    if line[:1] in (b" ", b"\t"):
        return "starts with whitespace (folded header lines are refused)"
    name, colon, _ = line.partition(b":")
    if not colon:
        return "no ':'"
    if name[-1:] in (b" ", b"\t"):
        return "whitespace before ':'"
    if re.fullmatch(_TCHAR + b"+", name) is None:
        return "invalid header token"
    if _FIELD_LINE.fullmatch(line + b"\r\n") is None:
        return "invalid character in the value"
    return None
