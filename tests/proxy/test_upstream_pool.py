"""The proxy's lean upstream client against a raw TCP server that answers exactly what each test scripts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from multidict import CIMultiDict

from services.auth_proxy.transport.errors import BadUpstreamResponse, HeaderInjection, UpstreamUnreachable
from services.auth_proxy.transport.upstream import UpstreamPool
from services.auth_proxy.transport.upstream_connection import Origin

Script = Callable[[bytes], bytes | None]  # request head -> raw answer (None: close without answering)


class RawServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.heads: list[bytes] = []
        self.connections = 0
        self.close_after_answer = False
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.heads.append(head + body)
                answer = self.script(head)
                if answer is None:
                    break
                for part in answer if isinstance(answer, list) else [answer]:
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0.05 if isinstance(answer, list) else 0)
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Script], RawServer]]:
    servers: list[RawServer] = []

    async def start(script: Script) -> RawServer:
        srv = RawServer(script)
        srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
        servers.append(srv)
        return srv

    yield start  # type: ignore[misc]
    await asyncio.sleep(0.05)  # let the servers' handlers see the pool's connections close
    for srv in servers:
        assert srv.server is not None
        srv.server.close()


def ok(body: bytes = b"hello", extra: bytes = b"") -> Script:
    return lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def pool(**kw: float) -> UpstreamPool:
    return UpstreamPool(
        limit=int(kw.get("limit", 10)),
        connect_timeout=kw.get("connect", 1.0),
        read_timeout=kw.get("read", 1.0),
        read_bufsize=1 << 16,
    )


async def test_keeps_the_connection_and_sends_aiohttps_headers(raw) -> None:
    srv = await raw(ok())
    p, origin = pool(), Origin.parse(f"http://127.0.0.1:{(await raw(ok())).port}/api/")
    origin = Origin.parse(f"http://127.0.0.1:{srv.port}/api/")
    for _ in range(3):
        r = await p.request("GET", origin, "/x?a=1", CIMultiDict({"Authorization": "Bearer t"}), None)
        assert r.status == 200 and await r.read() == b"hello"
        r.release()
    assert srv.connections == 1
    assert (
        srv.heads[0]
        == f"GET /api/x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nAuthorization: Bearer t\r\n\r\n".encode()
    )
    r = await p.request("POST", origin, "/y", CIMultiDict(), b"abc")
    await r.read()
    r.release()
    assert srv.heads[-1].endswith(b"Content-Length: 3\r\nContent-Type: application/octet-stream\r\n\r\nabc")
    r = await p.request("DELETE", origin, "/y", CIMultiDict(), None)
    await r.read()
    r.release()
    assert srv.heads[-1].endswith(b"Content-Length: 0\r\n\r\n")
    await p.close()


async def test_chunked_and_until_eof_bodies(raw) -> None:
    chunked = await raw(
        lambda h: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    p = pool()
    r = await p.request("GET", Origin.parse(f"http://127.0.0.1:{chunked.port}"), "/", CIMultiDict(), None)
    assert await r.read() == b"abcde" and r.content_length is None
    r.release()
    eof = await raw(lambda h: b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
    eof.close_after_answer = True
    r = await p.request("GET", Origin.parse(f"http://127.0.0.1:{eof.port}"), "/", CIMultiDict(), None)
    assert await r.read() == b"until the end"
    r.release()
    await p.close()


async def test_head_204_and_100_continue(raw) -> None:
    srv = await raw(
        lambda h: (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
            if h.startswith(b"PUT")
            else b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
        )
    )
    p, origin = pool(), Origin.parse(f"http://127.0.0.1:{srv.port}")
    r = await p.request("HEAD", origin, "/", CIMultiDict(), None)
    assert r.status == 200 and r.content_length == 5000 and await r.read() == b""
    r.release()
    r = await p.request("PUT", origin, "/", CIMultiDict(), b"x")
    assert r.status == 204 and await r.read() == b""
    r.release()
    assert srv.connections == 1
    await p.close()


async def test_connection_close_is_not_reused(raw) -> None:
    srv = await raw(ok(extra=b"Connection: close\r\n"))
    srv.close_after_answer = True
    p, origin = pool(), Origin.parse(f"http://127.0.0.1:{srv.port}")
    for _ in range(2):
        r = await p.request("GET", origin, "/", CIMultiDict(), None)
        await r.read()
        r.release()
    assert srv.connections == 2
    await p.close()


async def test_stale_kept_alive_connection_is_retried_once_for_idempotent_methods(raw) -> None:
    answers = iter([ok()(b""), None, ok()(b""), None, ok()(b"")])
    srv = await raw(lambda h: next(answers))
    p, origin = pool(), Origin.parse(f"http://127.0.0.1:{srv.port}")
    r = await p.request("GET", origin, "/", CIMultiDict(), None)
    await r.read()
    r.release()
    # The server drops the kept-alive connection when the next request arrives.
    r = await p.request("GET", origin, "/", CIMultiDict(), None)
    assert r.status == 200 and await r.read() == b"hello"
    r.release()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await p.request("POST", origin, "/", CIMultiDict(), b"once")
    await p.close()


async def test_limit_makes_callers_wait(raw) -> None:
    srv = await raw(ok())
    p, origin = pool(limit=2), Origin.parse(f"http://127.0.0.1:{srv.port}")

    async def one() -> bytes:
        r = await p.request("GET", origin, "/", CIMultiDict(), None)
        await asyncio.sleep(0.01)
        body = await r.read()
        r.release()
        return body

    assert await asyncio.gather(*(one() for _ in range(10))) == [b"hello"] * 10
    assert srv.connections == 2
    await p.close()


async def test_failures(raw) -> None:
    p = pool(read=0.2)
    with pytest.raises(UpstreamUnreachable):
        await p.request("GET", Origin.parse("http://127.0.0.1:9"), "/", CIMultiDict(), None)
    silent = await raw(lambda h: b"")
    with pytest.raises(aiohttp.ServerTimeoutError):
        await p.request("GET", Origin.parse(f"http://127.0.0.1:{silent.port}"), "/", CIMultiDict(), None)
    garbage = await raw(lambda h: b"NOT HTTP AT ALL\r\n\r\n")
    with pytest.raises(BadUpstreamResponse):
        await p.request("GET", Origin.parse(f"http://127.0.0.1:{garbage.port}"), "/", CIMultiDict(), None)
    srv = await raw(ok())
    with pytest.raises(HeaderInjection):
        await p.request(
            "GET",
            Origin.parse(f"http://127.0.0.1:{srv.port}"),
            "/",
            CIMultiDict({"Authorization": "Bearer a\r\nX: y"}),
            None,
        )
    assert srv.heads == []
    short = await raw(lambda h: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
    short.close_after_answer = True
    r = await p.request("GET", Origin.parse(f"http://127.0.0.1:{short.port}"), "/", CIMultiDict(), None)
    with pytest.raises(aiohttp.ClientPayloadError):
        await r.read()
    r.release()
    await p.close()
    assert p._open == 0


async def test_read_timeout_mid_body_and_between_requests(raw) -> None:
    stall = await raw(lambda h: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
    p = pool(read=0.3)
    origin = Origin.parse(f"http://127.0.0.1:{stall.port}")
    r = await p.request("GET", origin, "/", CIMultiDict(), None)
    assert await r.content.readany() == b"part"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(aiohttp.ServerTimeoutError):
        await r.content.readany()
    assert 0.2 < loop.time() - started < 0.6
    r.release()
    # A connection idle longer than the read timeout is not timed out once reused.
    srv = await raw(ok())
    origin = Origin.parse(f"http://127.0.0.1:{srv.port}")
    r = await p.request("GET", origin, "/", CIMultiDict(), None)
    await r.read()
    r.release()
    await asyncio.sleep(0.5)
    r = await p.request("GET", origin, "/", CIMultiDict(), None)
    assert await r.read() == b"hello"
    r.release()
    assert srv.connections == 1
    await p.close()


async def test_large_bodies_arrive_intact_with_backpressure_and_reuse(raw) -> None:
    import hashlib
    import os as _os

    blob = _os.urandom(5_000_000)
    srv = await raw(lambda h: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(blob) + blob)
    p = UpstreamPool(limit=4, connect_timeout=1, read_timeout=2, read_bufsize=1 << 16)
    origin = Origin.parse(f"http://127.0.0.1:{srv.port}")
    for slow in (True, False, True):
        r = await p.request("GET", origin, "/", CIMultiDict(), None)
        digest, total = hashlib.sha256(), 0
        while chunk := await r.content.read(50_000):
            digest.update(chunk)
            total += len(chunk)
            if slow:
                await asyncio.sleep(0.001)
        assert total == len(blob) and digest.digest() == hashlib.sha256(blob).digest()
        r.release()
    assert srv.connections == 1
    await p.close()


async def test_bytes_after_a_sized_body_make_the_connection_unusable(raw) -> None:
    srv = await raw(lambda h: [b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab", b"cdefEXTRA"])
    p, origin = pool(), Origin.parse(f"http://127.0.0.1:{srv.port}")
    for _ in range(2):
        r = await p.request("GET", origin, "/", CIMultiDict(), None)
        assert await r.read() == b"abcdef"
        r.release()
    assert srv.connections == 2
    await p.close()


async def test_idle_connections_are_closed_after_the_keepalive_timeout(raw, monkeypatch) -> None:
    import services.auth_proxy.transport.upstream as up

    monkeypatch.setattr(up, "_KEEPALIVE_TIMEOUT", 0.1)
    srv = await raw(ok())
    p, origin = pool(), Origin.parse(f"http://127.0.0.1:{srv.port}")
    r = await p.request("GET", origin, "/", CIMultiDict(), None)
    await r.read()
    r.release()
    assert p._open == 1
    await asyncio.sleep(0.35)
    assert p._open == 0 and p._idle[origin] == []
    r = await p.request("GET", origin, "/", CIMultiDict(), None)
    await r.read()
    r.release()
    assert srv.connections == 2
    await p.close()
