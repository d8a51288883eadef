"""The proxy's server side: HTTP/1.1 connections read by aiohttp's parser and answered directly.

Why not ``aiohttp.web``: per 1 KB request its server side (the router, the
request object, the ``StreamResponse`` machinery around every answer) cost
about a quarter of the proxy's CPU, more than anything the proxy itself does.
This module keeps the parts of aiohttp that matter and are hard to get right:
the C llhttp request parser (size limits, refusal of malformed requests and
CR/LF in headers, chunked bodies, pipelining), ``StreamReader`` for request
bodies with its flow control, ``BaseProtocol``'s write backpressure and
aiohttp's header serializer. Before llhttp sees a byte, ``StrictReader``
(strict_reader.py) reads it as RFC 9112 does, since llhttp is lenient in
places (HTTP/0.9 lines, two spaces) where a request must mean one thing
only. What it adds besides is small: one task per connection
answering requests in order, an answer written in one call, keep-alive and its
idle timeout, ``Expect: 100-continue``, and a drain on shutdown.

Request bodies are not decompressed (a proxy passes ``Content-Encoding`` on
untouched). A request whose body was not read to its end (refused before any
upstream call, say) has the rest discarded, within limits, so that the caller
reads the answer instead of a reset; past those limits the connection closes.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.tcp_helpers import tcp_keepalive
from multidict import CIMultiDict

from services.auth_proxy.metrics import REFUSED
from services.auth_proxy.transport.aiohttp_private import Protocol
from services.auth_proxy.transport.errors import CallerBodyError
from services.auth_proxy.transport.exchange import Exchange, head_bytes, internal_error
from services.auth_proxy.transport.strict_reader import HeadRefused, StrictReader
from shared.config_errors import ListenError
from shared.logging import get_logger

log = get_logger(__name__)

Handler = Callable[[Exchange], Awaitable[None]]

# A request body's reader holds up to twice this before the connection stops reading.
_BODY_BUFFER = 64 << 10
# Pipelined requests parsed ahead of the one being answered; past this the connection stops reading.
_MAX_QUEUED = 16
# What is read and thrown away of a body the handler left unread, before giving up on the connection.
_DISCARD_BYTES = 1 << 20
_DISCARD_SECONDS = 2.0
# Where aiohttp's parser errors quote the offending bytes.
_ECHOED = re.compile(r"b'|b\"|bytearray\(")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may carry, and how long an idle keep-alive connection is kept."""

    max_field_size: int = 8190
    max_line_size: int = 8190
    max_headers: int = 128
    keepalive_timeout: float = 75.0


class _Connection(Protocol):
    """One caller's connection: requests parsed as they arrive, answered one after another by one task."""

    def __init__(self, server: Server) -> None:
        loop = server.loop
        limits = server.limits
        parser = HttpRequestParser(
            self,
            loop,
            _BODY_BUFFER,
            max_line_size=limits.max_line_size,
            max_field_size=limits.max_field_size,
            max_headers=limits.max_headers,
            payload_exception=CallerBodyError,
            auto_decompress=False,
            max_msg_queue_size=_MAX_QUEUED,
        )
        super().__init__(loop, parser)
        self._reader = StrictReader(limits.max_line_size, limits.max_field_size, limits.max_headers)
        self.server = server
        self.busy = False
        self._queue: deque[tuple[RawRequestMessage, StreamReader] | HttpProcessingError] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._body: StreamReader | None = None
        self._eof = False
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # TCP_NODELAY
        assert self.transport is not None
        # As aiohttp's server does: a caller that vanished without closing is found out.
        tcp_keepalive(self.transport)
        self.server.connections.add(self)
        self._idle_since = self.loop.time()
        self._idle_timer = self.loop.call_later(self.server.limits.keepalive_timeout, self._idle_check)
        self._task = self.loop.create_task(self._serve())

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.server.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._fail_unfinished_bodies()
        self._wake()

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or self._eof:
            return
        # The strict reading first: the parser gets only bytes it passed (see strict_reader.py).
        clean, refusal = self._reader.feed(data)
        try:
            messages, upgraded, _ = parser.feed_data(clean)
        except HttpProcessingError as exc:
            self._stop_reading(exc)
        else:
            for index, item in enumerate(messages):
                if not self._reader.agrees(item[0]):
                    messages = messages[:index]
                    refusal = HeadRefused(400, "the request head cannot be read one way only")
                    break
            self._queue.extend(messages)
            if upgraded:
                # An Upgrade (WebSocket, h2c) is not proxied: this request is answered, then the connection closes.
                self.stop_parsing(upgraded=True)
            elif refusal is not None:
                self._stop_reading(refusal)
            if len(self._queue) >= _MAX_QUEUED and not self.buffer_paused:
                self.pause_for_buffer()
        self._wake()

    def _stop_reading(self, exc: HttpProcessingError) -> None:
        """A malformed request: answered with its refusal in turn; nothing after it can be trusted."""
        self._queue.append(exc)
        self.stop_parsing()
        self.pause_for_buffer()
        # A body being read (bad chunk framing in a later packet, say) fails now instead of waiting.
        self._fail_unfinished_bodies(f"the request body is malformed: {_refusal(exc, self.server.limits)[1]}")

    def eof_received(self) -> bool:
        # The caller will send no more but may still read: answer what came, then close.
        self._eof = True
        if self.parser is not None:
            try:
                self.parser.feed_eof()
            except HttpProcessingError:
                pass  # a truncated body: failed just below
        self._fail_unfinished_bodies()
        self._wake()
        return True

    def _fail_unfinished_bodies(self, reason: str = "the caller closed the connection mid-body") -> None:
        """No more bytes will come: a body still short of its end, being read or queued, fails instead of waiting."""
        bodies = [self._body] + [item[1] for item in self._queue if isinstance(item, tuple)]
        for body in bodies:
            if body is not None and body is not EMPTY_PAYLOAD and not body.is_eof():
                body.set_exception(CallerBodyError(reason))

    @property
    def draining(self) -> bool:
        return self.server.draining

    def date(self) -> str:
        return self.server.date()

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the caller closed the connection")
        transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task answering this connection's requests; None before the connection is made."""
        return self._task

    def drain_soon(self) -> None:
        """At shutdown: closed now if idle, else after the requests it has (``_next`` sees the server draining)."""
        if not self.busy and not self._queue:
            self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _idle_check(self) -> None:
        """One timer per connection, re-armed only when it fires (not rescheduled on every request)."""
        self._idle_timer = None
        if self.transport is None:
            return
        timeout = self.server.limits.keepalive_timeout
        idle_for = self.loop.time() - self._idle_since
        if not self.busy and not self._queue and idle_for >= timeout:
            self.close()
            return
        self._idle_timer = self.loop.call_later(max(timeout - idle_for, 1.0), self._idle_check)

    async def _serve(self) -> None:
        try:
            while await self._next():
                item = self._queue.popleft()
                if isinstance(item, HttpProcessingError):
                    self._refuse(item)
                    return
                if self.parser is not None:
                    self.parser.message_consumed()
                    if self.buffer_paused and len(self._queue) <= _MAX_QUEUED // 2:
                        self._resume_queue()
                message, body = item
                if not await self._answer(Exchange(self, message, body)):
                    return
        finally:
            self.close()

    async def _next(self) -> bool:
        """Wait for the next request; False when the connection is done (closed, idle at shutdown, EOF)."""
        while not self._queue:
            if self.transport is None or self._eof or self.parser is None or self.server.draining:
                return False
            self._idle_since = self.loop.time()
            self._waiter = self.loop.create_future()
            await self._waiter
        return self.transport is not None

    async def _answer(self, exchange: Exchange) -> bool:
        """Run the handler on one request; whether the connection can take the next one."""
        self.busy = True
        self._body = exchange.body_reader
        try:
            await self.server.handler(exchange)
        except Exception:
            log.exception("request failed", method=exchange.method, path=exchange.path)
            internal_error(exchange)
            return False
        finally:
            self.busy = False
            self._body = None
        if not exchange.status:
            log.error("request left unanswered", method=exchange.method, path=exchange.path)
            internal_error(exchange)
            return False
        if not exchange.reusable():
            return False
        return await self._discard_unread(exchange.body_reader)

    async def _discard_unread(self, body: StreamReader) -> bool:
        """Read away what the handler left of the body, so the next request can be parsed."""
        if body is EMPTY_PAYLOAD or body.is_eof():
            return True
        left = _DISCARD_BYTES
        try:
            async with asyncio.timeout(_DISCARD_SECONDS):
                while left > 0:
                    chunk = await body.readany()
                    if not chunk:
                        return body.is_eof()
                    left -= len(chunk)
        except (TimeoutError, CallerBodyError):
            pass
        return False

    def _resume_queue(self) -> None:
        self.data_received(b"")  # parse what arrived while the queue was full
        if len(self._queue) < _MAX_QUEUED:
            self.resume_for_buffer()

    def _refuse(self, exc: HttpProcessingError) -> None:
        """A request the parser refused: a JSON error naming the problem, then the connection closes."""
        status, reason = _refusal(exc, self.server.limits)
        log.info("malformed request refused", status=status, reason=reason)
        REFUSED.labels("malformed_request").inc()
        body = orjson.dumps({"error": "bad_request", "message": reason})
        head = head_bytes(
            status,
            CIMultiDict(
                {
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                    "Connection": "close",
                    "Date": self.server.date(),
                }
            ),
        )
        try:
            self.send(head + body)
        except ConnectionError:
            pass


def _refusal(exc: HttpProcessingError, limits: Limits) -> tuple[int, str]:
    """Status and reason for a refused request; never echoes the caller's bytes (they may hold a credential)."""
    if isinstance(exc, HeadRefused):
        return exc.code, exc.message
    if isinstance(exc, LineTooLong):
        if "bytearray(" in str(exc.message):  # llhttp was still reading the target
            return 414, f"the request target is longer than {limits.max_line_size} bytes"
        return 431, f"a request header is longer than {limits.max_field_size} bytes"
    kept = []
    for line in str(exc.message).splitlines():
        line = _ECHOED.split(line.strip(), maxsplit=1)[0].strip()
        if line and not line.startswith("^"):
            kept.append(line.rstrip(":."))
    return 400, ": ".join(kept)[:200] or type(exc).__name__


class Server:
    """Listening sockets, the open connections, and a graceful stop."""

    def __init__(self, handler: Handler, limits: Limits | None = None) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.draining = False
        self._servers: list[asyncio.Server] = []
        self._second = -1
        self._date = ""

    async def listen(self, host: str, port: int, reuse_port: bool = False) -> list[tuple[str, int]]:
        """Start accepting on host:port; the addresses bound (port 0 picks a free one). Raises ListenError."""
        try:
            server = await self.loop.create_server(
                lambda: _Connection(self),
                host,
                port,
                reuse_address=True,
                reuse_port=reuse_port or None,
                backlog=1024,
            )
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(f"cannot listen on {host}:{port}: {reason}") from None
        self._servers.append(server)
        return [s.getsockname()[:2] for s in server.sockets if s.family in (socket.AF_INET, socket.AF_INET6)]

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let requests in flight finish for up to ``timeout`` s."""
        self.draining = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.drain_soon()
        tasks = [task for task in (c.task for c in self.connections) if task is not None and not task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("requests still in flight at shutdown were cut off", count=len(pending))
                await asyncio.wait(pending, timeout=1.0)
        for conn in list(self.connections):
            conn.close()
        for server in self._servers:
            await server.wait_closed()

    def date(self) -> str:
        """The Date header's value, formatted once a second."""
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
        return self._date
