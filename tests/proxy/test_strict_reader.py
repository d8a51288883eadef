"""The proxy's strict reading of request bytes (services/auth_proxy/transport/strict_reader.py), without a network.

The same bytes must be read the same however TCP cuts them into packets, and a
message the parser read otherwise than the strict reading is caught.
"""

from __future__ import annotations

import asyncio

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.auth_proxy.transport.strict_reader import StrictReader
from tests.http_heads import request_bytes


def read(pieces: list[bytes]) -> tuple[bytes, int | None, list[object]]:
    reader = StrictReader(8190, 8190, 128)
    passed = b""
    for piece in pieces:
        clean, refusal = reader.feed(piece)
        passed += clean
        if refusal is not None:
            return passed, refusal.code, list(reader.heads)
    return passed, None, list(reader.heads)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(data=request_bytes(), cuts=st.lists(st.integers(0, 400), max_size=8))
@example(data=b"GET /a HTTP/1.1\r\nHost: p\r\n\r\n", cuts=list(range(30)))  # one byte at a time
@example(
    data=b"POST /a HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", cuts=[50, 52]
)
def test_the_reading_does_not_depend_on_where_the_packets_end(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    assert read(pieces) == read([data])


def test_a_message_the_parser_read_otherwise_is_caught() -> None:
    reader = StrictReader(8190, 8190, 128)
    assert reader.feed(b"GET /a HTTP/1.1\r\nHost: p\r\n\r\nGET /b HTTP/1.1\r\nHost: p\r\n\r\n")[1] is None
    same, other = parse(b"GET /a HTTP/1.1\r\nHost: p\r\n\r\n"), parse(b"GET /b HTTP/1.1\r\nHost: p\r\nX: 1\r\n\r\n")
    assert reader.agrees(same)
    assert not reader.agrees(other)  # one header more than the strict reading found
    assert not reader.agrees(same)  # and nothing left to match


def parse(head: bytes) -> RawRequestMessage:
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(BaseProtocol(loop), loop, 1 << 16)
        messages, _, _ = parser.feed_data(head)
        return messages[0][0]
    finally:
        loop.close()
