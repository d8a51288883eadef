"""Streamed uploads through the proxy's upstream pool put on the wire what aiohttp's ClientSession did.

The pool replaced ``ClientSession`` for streamed uploads (the last requests that used it): a differential test
sends the same chunks both ways to a recording server and compares the requests byte for byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from services.auth_proxy.transport.errors import CallerBodyError
from services.auth_proxy.transport.upstream import UpstreamPool
from services.auth_proxy.transport.upstream_connection import Origin


class Recorder:
    """Reads each request whole (chunked or sized) and answers it; ``early`` answers 413 after the head instead."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.connections = 0
        self.early = False
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if self.early:
                    writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    break
                self.requests.append(head + await _body(reader, head))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def _body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lines = head.lower().split(b"\r\n")
    if b"transfer-encoding: chunked" in lines:
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line, 16)
            body += size_line + await reader.readexactly(size + 2)
            if size == 0:
                return body
    for line in lines:
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    return b""


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    rec.server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    yield rec
    rec.server.close()


def _origin(rec: Recorder) -> Origin:
    assert rec.server is not None
    return Origin.parse(f"http://127.0.0.1:{rec.server.sockets[0].getsockname()[1]}/api")


async def _chunks(parts: list[bytes], fail: bool = False) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if fail:
        raise CallerBodyError("the caller closed the connection mid-body")


def _pool() -> UpstreamPool:
    return UpstreamPool(limit=4, connect_timeout=2.0, read_timeout=2.0, read_bufsize=1 << 16)


async def _via_session(origin: Origin, method: str, headers: dict[str, str], parts: list[bytes]) -> None:
    # The ClientSession as the proxy configured it for streamed uploads before the pool took them.
    async with aiohttp.ClientSession(
        auto_decompress=False, skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"), trust_env=False
    ) as session:
        url = f"http://{origin.host_header}{origin.base_path}/up"
        async with session.request(method, url, headers=headers, data=_chunks(parts), allow_redirects=False) as r:
            assert r.status == 200 and await r.read() == b"ok"


async def _via_pool(origin: Origin, method: str, headers: dict[str, str], parts: list[bytes]) -> None:
    pool = _pool()
    try:
        response = await pool.request(method, origin, "/up", CIMultiDict(headers), _chunks(parts))
        assert response.status == 200 and await response.read() == b"ok"
        response.release()
    finally:
        await pool.close()


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(st.binary(max_size=300), max_size=6),
    sized=st.booleans(),
    method=st.sampled_from(["POST", "PUT", "PATCH"]),
    content_type=st.sampled_from([None, "text/csv"]),
)
@example(parts=[], sized=False, method="POST", content_type=None)
@example(parts=[b"", b"a", b""], sized=False, method="PUT", content_type="text/csv")
@example(parts=[b"x" * 300, b"y"], sized=True, method="POST", content_type=None)
async def test_the_wire_is_the_same_as_client_sessions(
    recorder: Recorder, parts: list[bytes], sized: bool, method: str, content_type: str | None
) -> None:
    origin = _origin(recorder)
    headers = {"Authorization": "Bearer t", "X-Request-ID": "r1"}
    if sized:
        headers["Content-Length"] = str(sum(map(len, parts)))
    if content_type:
        headers["Content-Type"] = content_type
    recorder.requests.clear()
    await _via_session(origin, method, headers, parts)
    await _via_pool(origin, method, headers, parts)
    by_session, by_pool = recorder.requests
    assert by_pool == by_session


async def test_a_caller_body_that_breaks_off_is_raised_as_such(recorder: Recorder) -> None:
    pool = _pool()
    with pytest.raises(CallerBodyError, match="mid-body"):
        await pool.request("POST", _origin(recorder), "/up", CIMultiDict(), _chunks([b"abc"], fail=True))
    await pool.close()


async def test_an_answer_before_the_body_ends_the_upload_and_the_connection(recorder: Recorder) -> None:
    recorder.early = True
    never_ending = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        yield b"first"
        await never_ending.wait()
        yield b"never sent"

    pool = _pool()
    body = endless()
    response = await pool.request("POST", _origin(recorder), "/up", CIMultiDict(), body)
    assert response.status == 413
    response.release()
    # The connection was not kept: the next request opens a new one.
    recorder.early = False
    again = await pool.request("GET", _origin(recorder), "/x", CIMultiDict(), None)
    assert again.status == 200 and await again.read() == b"ok"
    again.release()
    assert recorder.connections == 2
    await pool.close()
