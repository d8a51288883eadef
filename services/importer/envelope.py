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
from services.importer.stats import RunStats

_WHITESPACE = b" \t\r\n"
_STRING_END = re.compile(rb'["\\]')
_SHORT_STRING_LIMIT = 4096
_JSON_ESCAPES = {ord("/"): b"/", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}


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
            self.pos += 1
            if match.group() == b'"':
                return
            yield await self._escape()
        raise _not_json("the response ends inside a string")

    async def _escape(self) -> bytes:
        if not await self.fill():
            raise _not_json("the response ends inside a string")
        code = self.buf[self.pos]
        self.pos += 1
        if code == ord("u"):
            digits = b""
            while len(digits) < 4 and await self.fill():
                take = self.buf[self.pos : self.pos + 4 - len(digits)]
                digits += take
                self.pos += len(take)
            try:
                return chr(int(digits, 16)).encode()
            except ValueError:
                raise _not_json(f"bad \\u escape at byte {self.where}") from None
        return _JSON_ESCAPES.get(code, bytes([code]))

    async def short_string(self) -> str:
        raw = b""
        async for part in self.string_chunks():
            raw += part
            if len(raw) > _SHORT_STRING_LIMIT:
                raise _not_json(f"a key or module_name longer than {_SHORT_STRING_LIMIT} bytes")
        return raw.decode("utf-8", "replace")

    async def skip_value(self) -> None:
        """Skip one JSON value of a member the importer does not use."""
        first = await self.peek()
        if first == ord('"'):
            self.pos += 1
            async for _ in self.string_chunks():
                pass
            return
        depth = 0
        while await self.fill():
            byte = self.buf[self.pos]
            if byte == ord('"'):
                self.pos += 1
                async for _ in self.string_chunks():
                    pass
                continue
            if depth == 0 and byte in b",}" + _WHITESPACE:
                return
            depth += (byte in b"{[") - (byte in b"}]")
            self.pos += 1
            if depth == 0 and byte in b"}]":
                return
        raise _not_json("the response ends inside a value")


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


async def b64decode(chunks: AsyncIterator[bytes], stats: RunStats) -> AsyncIterator[bytes]:
    """Decode base64 text as it arrives, in whole 4-character groups; line breaks in it are allowed."""
    rest = b""
    offset = 0
    async for chunk in chunks:
        with stats.timed("decode"):
            data = rest + chunk.translate(None, _WHITESPACE)
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
        yield decoded
    if rest:
        raise BadExport("invalid_base64", f"'data' is not valid base64: {len(rest)} characters left over at the end")
    if offset == 0:
        raise BadExport("empty_export", "'data' is empty: the export holds no file")
