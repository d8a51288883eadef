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
from dataclasses import dataclass

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from services.auth_proxy.transport.aiohttp_private import ResponseProtocol, shrink_ciphertext_buffer
from services.auth_proxy.transport.errors import BadUpstreamResponse, HeaderInjection, UpstreamUnreachable
from services.auth_proxy.transport.splice import plain_socket

# A request body: whole in memory, streamed as it arrives, or none.
Body = bytes | AsyncIterator[bytes] | None

_NO_DEFAULT_BODY = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_POST_METHODS = frozenset({"PATCH", "POST", "PUT"})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Idle connections are closed after this long, as aiohttp's connector does.
_KEEPALIVE_TIMEOUT = 15.0
# One read from a plain upstream socket (see _Connection.get_buffer): the head and small answers
# whole; 16 KiB saved no more. Over TLS, as much as is decrypted at once, up to the scratch size.
_READ_SIZE = 32 << 10
_SCRATCH_SIZE = 256 << 10
# TLS ciphertext read from the socket at once (asyncio's default is 256 KiB). Over TLS with 1 MB answers
# at 256 connections the proxy held 320-335 MB; with 128 KiB, 230 MB at the same CPU per answer
# (64 KiB: 166 MB but 35% more CPU).
_CIPHERTEXT_READ = 128 << 10


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a provider's API lives: the connection's address and what prefixes every request target."""

    host: str
    port: int
    tls: bool
    host_header: str
    base_path: str

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.raw_host or url.port is None:
            raise ValueError(f"not an http(s) URL with a host: {base_url!r}")
        return cls(
            url.raw_host,
            url.port,
            url.scheme == "https",
            url.host_port_subcomponent or url.raw_host,
            url.raw_path.rstrip("/"),
        )


class _Connection(ResponseProtocol, asyncio.BufferedProtocol):
    """One keep-alive connection to an origin.

    Its read timeout is a watchdog armed once and re-armed only when it fires,
    instead of aiohttp's timer rescheduled on every read (6% of the proxy's CPU
    at 1 KB): the upstream has ``read_timeout`` seconds to start answering and
    then between reads; time spent paused by our own backpressure does not count.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, origin: Origin, read_timeout: float, scratch: memoryview
    ) -> None:
        super().__init__(loop)
        self.origin = origin
        self._scratch = scratch if origin.tls else scratch[:_READ_SIZE]
        self.idle_since = 0.0
        self.reused = False
        self._read_timeout_s = read_timeout
        self._waiting = False
        self._payload_now: StreamReader | None = None
        self._last_read = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._body_left = 0
        self._for_head = False

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the transport puts what it reads: the pool's one scratch buffer, copied out at once.

        As a buffered protocol, TLS decrypts straight into it, several records at a time; fed
        bytes instead, asyncio's ``SSLProtocol`` allocates 256 KiB for every record it decrypts
        (16 KiB of data) and joins them (over TLS with 1 MB answers, 5% less peak memory here; the
        larger saving is ``_CIPHERTEXT_READ``'s). A plain socket reads 32 KiB at a time, so
        that a large answer's first read leaves its body on the socket for ``splice.py`` (1 MB
        answers: CPU -20% against 256 KiB).
        """
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._scratch[:nbytes].tobytes())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.origin.tls:
            shrink_ciphertext_buffer(transport, _CIPHERTEXT_READ)

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        if self._body is None:
            super().data_received(data)
        elif data:
            self._pass_body(data)

    def pass_body(self, payload: StreamReader, length: int) -> None:
        """Feed the rest of this Content-Length body to ``payload`` directly, not through the parser.

        The parser copies every body byte into a new bytes object; past the
        headers a sized body needs no parsing, so the bytes read are handed on
        as they are (a sixth of the proxy's CPU at 1 MB).
        """
        left = length - payload.total_bytes
        # A paused parser may still hold body bytes of its own: then it keeps the whole body.
        if left > 0 and not payload.is_eof() and not self.reading_paused:
            self._body, self._body_left = payload, left

    def _pass_body(self, data: bytes) -> None:
        body, left = self._body, self._body_left
        assert body is not None
        if len(data) > left:
            # Bytes after the body, unasked for: this connection cannot be trusted again.
            self.force_close()
            data = data[:left]
        self._body_left = left - len(data)
        body.feed_data(data)
        if not self._body_left:
            self._body = None
            # The parser still expects this body; the next request gets a new parser.
            self.drop_parser()
            body.feed_eof()

    def hand_over_body(self) -> tuple[bytes, int] | None:
        """Stop reading and give up the rest of a passed-on body: (bytes already read, bytes still on the socket).

        None when the body is not passed on or is complete (the parser or the reader has it all).
        """
        body = self._body
        if body is None or not self._body_left or body.exception() is not None:
            return None
        # Reading what is buffered may resume the transport, so pause after it.
        taken = body.read_nowait()
        self.pause_reading()
        self._body = None
        return taken, self._body_left

    def body_relayed(self) -> None:
        """The handed-over body went around us in full: ready for the next answer, reading again."""
        payload = self._payload_now
        self._body_left = 0
        # As after a passed-on body: the parser still expects it, the next answer gets a new one.
        self.drop_parser()
        if payload is not None:
            payload.feed_eof()
        self.resume_reading()

    def expect_answer(self, head: bool, read_bufsize: int) -> None:
        """A parser for the next answer: the last one carries on unless a body went around it or HEAD-ness changes.

        After a complete message llhttp is ready for the next; a new parser costs 2 µs a request.
        """
        if self.parser is None or self._for_head != head:
            self.set_response_params(
                skip_payload=head, read_until_eof=True, auto_decompress=False, read_bufsize=read_bufsize
            )
            self._for_head = head

    def sent(self) -> None:
        """The whole request is out: the upstream has ``read_timeout`` seconds to answer (or go on answering)."""
        self._waiting = True
        self._last_read = self.loop.time()
        if self._watchdog is None and self._read_timeout_s:
            self._watchdog = self.loop.call_at(self._last_read + self._read_timeout_s, self._check)

    def answered(self, payload: StreamReader) -> None:
        self._payload_now = payload

    def idle(self) -> None:
        self._waiting = False
        self._payload_now = None

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        super().close()
        self._forget_body()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._forget_body()

    def _forget_body(self) -> None:
        # The reader points back at this connection: without this cycle break a cut-off
        # body's buffered bytes (up to ~0.75 MB) would wait for the cyclic GC.
        self._body = None
        self._payload_now = None

    def _check(self) -> None:
        self._watchdog = None
        payload = self._payload_now
        if not self._waiting or self.transport is None or (payload is not None and payload.is_eof()):
            return
        now = self.loop.time()
        if self.reading_paused:
            self._last_read = now
        deadline = self._last_read + self._read_timeout_s
        if now >= deadline:
            self.fire_read_timeout()
        else:
            self._watchdog = self.loop.call_at(deadline, self._check)


class UpstreamResponse:
    """The status and headers of an upstream answer, and its body as aiohttp's ``StreamReader``."""

    __slots__ = ("status", "reason", "headers", "content", "_pool", "_conn", "_upload")

    def __init__(
        self,
        pool: UpstreamPool,
        conn: _Connection,
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
        self._conn: _Connection | None = conn
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
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tls = tls
        # Shared by every connection: a read is copied out before the next one can start.
        self._scratch = memoryview(bytearray(_SCRATCH_SIZE))
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

    def release(self, conn: _Connection) -> None:
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

    async def _exchange(self, conn: _Connection, method: str, head: bytes, body: bytes | None) -> UpstreamResponse:
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

    async def _answer(self, conn: _Connection, method: str) -> UpstreamResponse:
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

    async def _acquire(self, origin: Origin, fresh: bool = False) -> _Connection:
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

    def _idle_connection(self, origin: Origin) -> _Connection | None:
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

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.tls else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, origin, self._read_timeout, self._scratch),
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

    def _discard(self, conn: _Connection) -> None:
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
            keep: list[_Connection] = []
            for conn in conns:
                if conn.idle_since > deadline and conn.is_connected():
                    keep.append(conn)
                else:
                    self._discard(conn)
            self._idle[origin] = keep
        if any(self._idle.values()):
            self._sweeper = loop.call_later(_KEEPALIVE_TIMEOUT, self._sweep)


async def _upload(conn: _Connection, head: bytes, body: AsyncIterator[bytes], chunked: bool) -> None:
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


def _write(conn: _Connection, data: bytes) -> None:
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
