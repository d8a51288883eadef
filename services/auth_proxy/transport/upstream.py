"""The proxy's upstream client: keep-alive HTTP/1.1 connections per origin, read by aiohttp's own protocol.

aiohttp's ``ClientSession`` cost about 80 µs of CPU per forwarded request, more
than the proxy's whole server side: request and response objects, cookie,
redirect, tracing and middleware machinery the proxy does not use. Requests
whose body is in memory (nearly all) go through this client instead: the
request head is written in one call and the response is read by aiohttp's
``ResponseHandler``, so parsing (the C llhttp parser), flow control and
backpressure, the per-read timeout and the errors raised are aiohttp's.
A streamed upload (a body too large to hold, or chunked) is written by a task
of its own while the answer is read, as ``ClientSession`` does: with the
caller's ``Content-Length`` where it gave one, else chunked; the read timeout
starts once the whole body is sent; and an answer that comes before the body
is done ends the upload when it is released, closing that connection.

Requests carry the headers ``ClientSession`` would send for the same call:
``Host`` first, the given ones, ``Content-Length`` for a body (``0`` for a
body-less POST, PUT, PATCH or DELETE; ``Transfer-Encoding: chunked`` for a
streamed one of unknown length) and ``Content-Type:
application/octet-stream`` when a body or a POST/PUT/PATCH has none. An idle
connection the upstream closed meanwhile costs an idempotent request with a
body in memory one retry on a fresh connection, as in aiohttp (a streamed
body cannot be sent twice).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

from services.auth_proxy.transport.errors import BadUpstreamResponse, HeaderInjection, UpstreamUnreachable
from services.auth_proxy.transport.splice import plain_socket
from services.auth_proxy.transport.upstream_connection import SCRATCH_SIZE, Origin, UpstreamConnection

# A request body: whole in memory, streamed as it arrives, or none.
Body = bytes | AsyncIterator[bytes] | None

_NO_DEFAULT_BODY = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_POST_METHODS = frozenset({"PATCH", "POST", "PUT"})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Idle connections are closed after this long, as aiohttp's connector does.
_KEEPALIVE_TIMEOUT = 15.0


class UpstreamResponse:
    """The status and headers of an upstream answer, and its body as aiohttp's ``StreamReader``."""

    __slots__ = ("status", "reason", "headers", "content", "_pool", "_conn", "_upload")

    def __init__(
        self,
        pool: UpstreamPool,
        conn: UpstreamConnection,
        status: int,
        reason: str | None,
        headers: CIMultiDictProxy[str],
        content: StreamReader,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content
        self._pool: UpstreamPool = pool
        self._conn: UpstreamConnection | None = conn
        self._upload: asyncio.Task[None] | None = None

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None

    async def read(self) -> bytes:
        content = self.content
        if content.is_eof() and content.exception() is None:
            # Small answers are whole by now: take them without a round through the event loop.
            return content.read_nowait()
        return await content.read()

    def hand_over_body(self) -> tuple[socket.socket, bytes, int] | None:
        """The rest of a sized body for someone to read straight from the socket (see ``splice.py``).

        Returns the plain (non-TLS) socket, the body bytes already read and the
        count still to come; None where that is not possible. After a handover
        the body is no longer fed to ``content``; ``body_relayed()`` says it was
        all read, and without it ``release()`` closes the connection.
        """
        conn = self._conn
        if conn is None:
            return None
        sock = plain_socket(conn.transport)
        if sock is None:
            return None
        handed = conn.hand_over_body()
        return None if handed is None else (sock, *handed)

    def body_relayed(self) -> None:
        if self._conn is not None:
            self._conn.body_relayed()

    def release(self) -> None:
        """Give the connection back: kept alive if the whole answer was read, else closed."""
        conn, self._conn = self._conn, None
        upload, self._upload = self._upload, None
        if upload is not None and not upload.done():
            # Answered before the streamed body was all sent: the rest is not wanted, the connection is spent.
            upload.cancel()
            if conn is not None:
                conn.force_close()
        if conn is not None:
            self._pool.release(conn)


class UpstreamPool:
    """Keep-alive connections to every origin, at most ``limit`` open at once (0: no limit)."""

    def __init__(
        self,
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        read_bufsize: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._read_bufsize = read_bufsize
        self._idle: dict[Origin, list[UpstreamConnection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tls = tls
        # Shared by every connection: a read is copied out before the next one can start.
        self._scratch = memoryview(bytearray(SCRATCH_SIZE))
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self, method: str, origin: Origin, target: str, headers: CIMultiDict[str], body: Body
    ) -> UpstreamResponse:
        """Send one request; the caller must ``release()`` the response.

        A streamed body's own failure (the caller's upload broke off) is raised as it is.
        """
        head = _head(method, origin, target, headers, body)
        if body is not None and not isinstance(body, bytes):
            return await self._streamed(method, origin, head, body, chunked="Content-Length" not in headers)
        conn = await self._acquire(origin)
        try:
            return await self._exchange(conn, method, head, body)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            self._discard(conn)
            if not conn.reused or method not in _IDEMPOTENT:
                raise
        except BaseException:
            self._discard(conn)
            raise
        # The upstream had closed the kept-alive connection: once more, on a new one.
        conn = await self._acquire(origin, fresh=True)
        try:
            return await self._exchange(conn, method, head, body)
        except BaseException:
            self._discard(conn)
            raise

    def release(self, conn: UpstreamConnection) -> None:
        conn.idle()
        if self._closed or conn.should_close or not conn.is_connected():
            self._discard(conn)
            return
        conn.idle_since = conn.loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(_KEEPALIVE_TIMEOUT, self._sweep)
        self._wake()

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    async def _exchange(
        self, conn: UpstreamConnection, method: str, head: bytes, body: bytes | None
    ) -> UpstreamResponse:
        conn.expect_answer(method == "HEAD", self._read_bufsize)
        transport = conn.transport
        assert transport is not None
        transport.write(head)
        if body:
            transport.write(body)
        conn.sent()
        return await self._answer(conn, method)

    async def _streamed(
        self, method: str, origin: Origin, head: bytes, body: AsyncIterator[bytes], chunked: bool
    ) -> UpstreamResponse:
        conn = await self._acquire(origin)
        upload = None
        try:
            conn.expect_answer(method == "HEAD", self._read_bufsize)
            upload = asyncio.create_task(_upload(conn, head, body, chunked))
            response = await self._answer(conn, method)
        except BaseException:
            if upload is not None:
                upload.cancel()
            self._discard(conn)
            raise
        response._upload = upload
        return response

    async def _answer(self, conn: UpstreamConnection, method: str) -> UpstreamResponse:
        try:
            while True:
                message, payload = await conn.read()
                # 1xx answers (100 Continue) precede the real one; 101 would be an upgrade.
                if not 100 <= message.code <= 199 or message.code == 101:
                    break
        except HttpProcessingError as exc:
            raise BadUpstreamResponse(f"invalid HTTP answer: {exc.message}") from None
        conn.answered(payload)
        length = message.headers.get("Content-Length")
        if length is not None and not message.chunked and method != "HEAD" and message.code not in (204, 304):
            conn.pass_body(payload, int(length))
        return UpstreamResponse(self, conn, message.code, message.reason, message.headers, payload)

    async def _acquire(self, origin: Origin, fresh: bool = False) -> UpstreamConnection:
        while True:
            conn = None if fresh else self._idle_connection(origin)
            if conn is not None:
                return conn
            if not self._limit or self._open < self._limit or self._close_idle_elsewhere():
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    self._waiters.remove(waiter)
        self._open += 1
        try:
            return await self._connect(origin)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    def _idle_connection(self, origin: Origin) -> UpstreamConnection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.is_connected() and not conn.should_close:
                conn.reused = True
                return conn
            self._discard(conn)
        return None

    def _close_idle_elsewhere(self) -> bool:
        """At the limit, an idle connection to another origin makes room."""
        for conns in self._idle.values():
            if conns:
                self._discard(conns.pop(0))
                return True
        return False

    async def _connect(self, origin: Origin) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.tls else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(loop, origin, self._read_timeout, self._scratch),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(f"connection timeout to {origin.host_header}") from None
        except ssl.SSLError as exc:
            raise UpstreamUnreachable(f"TLS with {origin.host_header} failed: {exc}", tls=True) from None
        except OSError as exc:
            raise UpstreamUnreachable(f"cannot connect to {origin.host_header}: {exc}") from None
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _discard(self, conn: UpstreamConnection) -> None:
        conn.close()
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() - _KEEPALIVE_TIMEOUT
        for origin, conns in list(self._idle.items()):
            keep: list[UpstreamConnection] = []
            for conn in conns:
                if conn.idle_since > deadline and conn.is_connected():
                    keep.append(conn)
                else:
                    self._discard(conn)
            self._idle[origin] = keep
        if any(self._idle.values()):
            self._sweeper = loop.call_later(_KEEPALIVE_TIMEOUT, self._sweep)


async def _upload(conn: UpstreamConnection, head: bytes, body: AsyncIterator[bytes], chunked: bool) -> None:
    """Write the head and then the body as it comes, waiting while the upstream is slow to take it.

    Whatever stops it (the caller's body failing, the upstream gone) fails the answer being read.
    """
    try:
        _write(conn, head)
        async for chunk in body:
            if chunk:
                _write(conn, b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain()
        if chunked:
            _write(conn, b"0\r\n\r\n")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        conn.set_exception(exc)
        return
    conn.sent()


def _write(conn: UpstreamConnection, data: bytes) -> None:
    transport = conn.transport
    if transport is None or transport.is_closing():
        raise aiohttp.ClientConnectionResetError("the upstream closed the connection during the upload")
    transport.write(data)


def _head(method: str, origin: Origin, target: str, headers: CIMultiDict[str], body: Body) -> bytes:
    lines = [f"{method} {origin.base_path}{target} HTTP/1.1", f"Host: {origin.host_header}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sized = "Content-Length" in headers
    typed = "Content-Type" in headers
    if isinstance(body, bytes) and not sized:
        lines.append(f"Content-Length: {len(body)}")
    elif body is None and method not in _NO_DEFAULT_BODY and not sized:
        lines.append("Content-Length: 0")
    if (body is not None or method in _POST_METHODS) and not typed:
        lines.append("Content-Type: application/octet-stream")
    if body is not None and not isinstance(body, bytes) and not sized:
        lines.append("Transfer-Encoding: chunked")  # after Content-Type, where aiohttp puts it
    text = "\r\n".join(lines) + "\r\n\r\n"
    # Every CR and LF must be ours: one pair per line and the blank line.
    if text.count("\n") != len(lines) + 1 or text.count("\r") != len(lines) + 1:
        raise HeaderInjection("a header name or value contains CR or LF")
    return text.encode("utf-8", "surrogateescape")
