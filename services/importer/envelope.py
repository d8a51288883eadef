"""Stage 2, decode: from ``{"module_name": ..., "data": "<base64 of a zip>"}`` to the zip's bytes, streamed.

No Python JSON library streams one string value of a document: ijson and
json-stream hand over whole strings (json-stream lists string streaming as
future work, daggaz/json-stream#45), and an export's ``data`` is the whole file.
So this scanner knows just this envelope: a top-level object whose ``data``
string it passes on chunk by chunk, whose ``module_name`` it checks, and whose
other members it skips. Anything else is "not the expected JSON", with the
byte offset where it went wrong.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import AsyncIterator

import orjson

from services.importer.errors import BadExport
from services.importer.stats import Timings

_WHITESPACE = b" \t\r\n"
# A quote or backslash ends a run of plain string bytes; so does a raw control character, which
# JSON forbids inside a string (raw tab, CR and LF are let through: exporters wrap base64 lines).
_STRING_END = re.compile(rb'["\\\x00-\x08\x0b\x0c\x0e-\x1f]')
_SHORT_STRING_LIMIT = 4096
# The other members are small (a timestamp, a count); held whole, they are checked by orjson.
_SKIPPED_VALUE_LIMIT = 1 << 20
# RFC 8259 §7: exactly these escapes; any other letter after a backslash is not JSON.
_JSON_ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}
_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")


class _Bytes:
    """A cursor over an async stream of byte chunks, refilled as it is read."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.buf = b""
        self.pos = 0
        self.offset = 0  # bytes of the stream before buf

    @property
    def where(self) -> int:
        return self.offset + self.pos

    async def fill(self) -> bool:
        """Make at least one unread byte available; False at the end of the stream."""
        while self.pos >= len(self.buf):
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                return False
            self.offset += len(self.buf)
            self.buf, self.pos = chunk, 0
        return True

    async def peek(self) -> int | None:
        """The next byte that is not JSON whitespace, without consuming it; None at the end."""
        while await self.fill():
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
        return None

    async def expect(self, allowed: bytes) -> int:
        found = await self.peek()
        if found is None or found not in allowed:
            shown = "the end" if found is None else repr(chr(found))
            raise _not_json(f"expected one of {allowed.decode()!r} at byte {self.where}, found {shown}")
        self.pos += 1
        return found

    async def string_chunks(self) -> AsyncIterator[bytes]:
        """The raw content of a string whose opening quote was consumed, escapes resolved, in chunks."""
        while await self.fill():
            match = _STRING_END.search(self.buf, self.pos)
            end = match.start() if match else len(self.buf)
            if end > self.pos:
                yield self.buf[self.pos : end]
            self.pos = end
            if match is None:
                continue
            if match.group() not in b'"\\':
                raise _not_json(f"a raw control character {match.group()!r} inside a string at byte {self.where}")
            self.pos += 1
            if match.group() == b'"':
                return
            yield await self._escape()
        raise _not_json("the response ends inside a string")

    async def _take(self, count: int) -> bytes:
        taken = b""
        while len(taken) < count and await self.fill():
            part = self.buf[self.pos : self.pos + count - len(taken)]
            taken += part
            self.pos += len(part)
        return taken

    async def _hex4(self) -> int:
        digits = await self._take(4)
        if not _HEX4.fullmatch(digits):
            raise _not_json(f"bad \\u escape at byte {self.where}")
        return int(digits, 16)

    async def _escape(self) -> bytes:
        where = self.where - 1
        if not await self.fill():
            raise _not_json("the response ends inside a string")
        code = self.buf[self.pos]
        self.pos += 1
        if code != ord("u"):
            if code not in _JSON_ESCAPES:
                raise _not_json(f"invalid escape '\\{chr(code)}' at byte {where}")
            return _JSON_ESCAPES[code]
        unit = await self._hex4()
        if 0xD800 <= unit < 0xDC00:
            # A character beyond the BMP is a UTF-16 surrogate pair: two escapes, high then low.
            low = await self._hex4() if await self._take(2) == b"\\u" else -1
            if not 0xDC00 <= low < 0xE000:
                raise _not_json(f"a \\u escape at byte {where} is half a surrogate pair")
            unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
        elif 0xDC00 <= unit < 0xE000:
            raise _not_json(f"a \\u escape at byte {where} is half a surrogate pair")
        return chr(unit).encode()

    async def short_string(self) -> str:
        raw = b""
        async for part in self.string_chunks():
            raw += part
            if len(raw) > _SHORT_STRING_LIMIT:
                raise _not_json(f"a key or module_name longer than {_SHORT_STRING_LIMIT} bytes")
        return raw.decode("utf-8", "replace")

    async def skip_value(self) -> None:
        """Skip one JSON value of a member the importer does not use, refusing it unless it is valid JSON."""
        start = self.where
        first = await self.peek()
        if first == ord('"'):
            self.pos += 1
            async for _ in self.string_chunks():
                pass
            return
        # Held whole (bounded) and handed to orjson: a hand-written check of numbers, literals and
        # nesting would be one more JSON reader to get wrong.
        try:
            orjson.loads(await self._raw_value(start))
        except orjson.JSONDecodeError as exc:
            raise _not_json(f"the value at byte {start} is not JSON ({exc})") from None

    async def _raw_value(self, start: int) -> bytes:
        """The bytes of one number, literal, array or object: up to where it ends by its brackets."""
        raw = bytearray()
        depth, in_string, escaped = 0, False, False
        while await self.fill():
            byte = self.buf[self.pos]
            if not in_string and depth == 0 and byte in b",}" + _WHITESPACE:
                break
            raw.append(byte)
            self.pos += 1
            if len(raw) > _SKIPPED_VALUE_LIMIT:
                raise _not_json(f"the value at byte {start} is longer than {_SKIPPED_VALUE_LIMIT} bytes")
            if in_string:
                in_string = escaped or byte != ord('"')
                escaped = not escaped and byte == ord("\\")
            elif byte == ord('"'):
                in_string = True
            elif byte in b"{[" or byte in b"}]":
                depth += 1 if byte in b"{[" else -1
                if depth <= 0:
                    break
        return bytes(raw)


def _not_json(detail: str) -> BadExport:
    return BadExport("not_json", f"the response is not the expected JSON object: {detail}")


async def base64_payload(chunks: AsyncIterator[bytes], module: str) -> AsyncIterator[bytes]:
    """The base64 text of ``data``, chunk by chunk; checks ``module_name`` against ``module``."""
    cursor = _Bytes(chunks)
    await cursor.expect(b"{")
    seen: set[str] = set()
    while await cursor.peek() != ord("}"):
        if seen:
            await cursor.expect(b",")
        await cursor.expect(b'"')
        key = await cursor.short_string()
        await cursor.expect(b":")
        if key in seen:
            raise _not_json(f"member {key!r} appears twice")
        seen.add(key)
        if key == "data":
            await _expect_string(cursor, "data")
            async for part in cursor.string_chunks():
                yield part
        elif key == "module_name":
            await _expect_string(cursor, "module_name")
            _check_module(await cursor.short_string(), module)
        else:
            await cursor.skip_value()
    await cursor.expect(b"}")
    if await cursor.peek() is not None:
        raise _not_json(f"unexpected data after the object at byte {cursor.where}")
    for required in ("module_name", "data"):
        if required not in seen:
            raise BadExport("not_json", f"the response has no {required!r} member")


async def _expect_string(cursor: _Bytes, key: str) -> None:
    if await cursor.peek() != ord('"'):
        raise BadExport("not_json", f"{key!r} is not a string (byte {cursor.where})")
    cursor.pos += 1


def _check_module(found: str, expected: str) -> None:
    if found != expected:
        shown = orjson.dumps(found[:100]).decode()
        raise BadExport("wrong_module", f"the export is for module {shown}, not {expected!r}")


async def b64decode(chunks: AsyncIterator[bytes], timings: Timings) -> AsyncIterator[bytes]:
    """Decode base64 text as it arrives, in whole 4-character groups; line breaks in it are allowed.

    The verdict is strict base64's on the whole text, wherever it is cut: padding ends it (a piece decoded
    alone may end in padding that the whole text has in its middle).
    """
    rest = b""
    offset = 0
    padded = False
    async for chunk in chunks:
        with timings.timed("decode"):
            data = rest + chunk.translate(None, _WHITESPACE)
            if padded and data:
                raise BadExport(
                    "invalid_base64", f"'data' is not valid base64 near character {offset}: Excess data after padding"
                )
            cut = len(data) - len(data) % 4
            rest = data[cut:]
            if not cut:
                continue
            try:
                decoded = binascii.a2b_base64(data[:cut], strict_mode=True)
            except binascii.Error as exc:
                raise BadExport(
                    "invalid_base64", f"'data' is not valid base64 near character {offset}: {exc}"
                ) from None
            offset += cut
            padded = data.endswith(b"=", 0, cut)
        yield decoded
    if rest:
        raise BadExport("invalid_base64", f"'data' is not valid base64: {len(rest)} characters left over at the end")
    if offset == 0:
        raise BadExport("empty_export", "'data' is empty: the export holds no file")
