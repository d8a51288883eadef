"""One request on a caller's connection, and its answer: the proxy's request and response in one object.

A handler reads the request (method, target, headers, the body whole or as it
arrives) and answers once: ``answer`` writes head and body in one call,
``begin``/``write``/``finish`` stream a body with backpressure. The head says
how the body is framed (``Content-Length``, chunked, or up to the close for
HTTP/1.0) and whether the connection stays open.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import AsyncIterator
from typing import Protocol

import orjson
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

from services.auth_proxy.transport.aiohttp_private import serialize_headers

_REASONS = {status.value: status.phrase for status in http.HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class Wire(Protocol):
    """What an exchange needs of its connection."""

    @property
    def transport(self) -> asyncio.Transport | None: ...

    @property
    def draining(self) -> bool: ...

    def date(self) -> str: ...

    def send(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


def head_bytes(status: int, headers: CIMultiDict[str]) -> bytes:
    """A status line and headers, serialized; refuses CR or LF in any of them."""
    return serialize_headers(f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", headers)


class Exchange:
    """One request on a connection, and its answer.

    The handler answers with ``answer`` (head and body in one write) or with
    ``begin``, ``write`` and ``finish`` for a streamed body, whose head goes out
    with its first bytes. ``status`` is 0 until an answer has begun.
    """

    __slots__ = (
        "method",
        "raw_path",
        "headers",
        "status",
        "_message",
        "_conn",
        "_body",
        "_keep_alive",
        "_expect_continue",
        "_head",
        "_chunked",
        "_finished",
    )

    def __init__(self, conn: Wire, message: RawRequestMessage, body: StreamReader) -> None:
        self.method = message.method
        self.raw_path = message.path
        self.headers: CIMultiDictProxy[str] = message.headers
        self.status = 0
        self._message = message
        self._conn = conn
        self._body = body
        self._keep_alive = not message.should_close and not message.upgrade
        self._expect_continue = (
            body is not EMPTY_PAYLOAD
            and message.version >= (1, 1)
            and message.headers.get("Expect", "").lower() == "100-continue"
        )
        self._head: bytes | None = None
        self._chunked = False
        self._finished = False

    # -- the request

    @property
    def path(self) -> str:
        """The decoded path, without the query: for logs."""
        return self._message.url.path

    @property
    def body_reader(self) -> StreamReader:
        return self._body

    @property
    def body_exists(self) -> bool:
        return self._body is not EMPTY_PAYLOAD

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None  # the parser refused anything but digits

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._conn.transport

    async def read(self) -> bytes:
        """The whole body."""
        self._send_continue()
        return await self._body.read()

    async def body_chunks(self, size: int) -> AsyncIterator[bytes]:
        """The body as it arrives, at most ``size`` bytes at a time, with backpressure."""
        self._send_continue()
        async for chunk in self._body.iter_chunked(size):
            yield chunk

    def _send_continue(self) -> None:
        if self._expect_continue:
            self._expect_continue = False
            try:
                self._conn.send(_CONTINUE)
            except ConnectionError:
                pass  # the caller left: reading the body fails with CallerBodyError

    # -- the answer

    @property
    def finished(self) -> bool:
        return self._finished

    def close_connection(self) -> None:
        """No further request on this connection: after a short answer, say."""
        self._keep_alive = False

    def answer(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        """The whole answer in one write (its head only for HEAD and body-less statuses)."""
        head = self._make_head(status, headers, len(body))
        self._finished = True
        try:
            self._conn.send(head if self.method == "HEAD" or _bodiless(status) else head + body)
        except ConnectionError:
            self._keep_alive = False  # the caller left: there is no one to tell

    def begin(self, status: int, headers: CIMultiDict[str], length: int | None) -> None:
        """Start a streamed answer of ``length`` bytes (None: chunked); the head waits for the first write."""
        self._head = self._make_head(status, headers, length)

    async def write(self, data: bytes) -> None:
        """Send body bytes, waiting while the caller is slow: raises ConnectionResetError once it has gone."""
        if self._chunked and data:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if self._head is not None:
            data, self._head = self._head + data, None
        self._conn.send(data)
        await self._conn.drain()

    async def finish(self) -> None:
        tail = _LAST_CHUNK if self._chunked else b""
        if self._head is not None:
            tail, self._head = self._head + tail, None
        if tail:
            self._conn.send(tail)
        self._finished = True
        await self._conn.drain()

    def _make_head(self, status: int, headers: CIMultiDict[str], length: int | None) -> bytes:
        if self.status:
            raise RuntimeError("this request was answered already")
        self.status = status
        if self._conn.draining or self._expect_continue:
            # Draining; or the caller still waits for a 100 Continue and will not send the body now.
            self._keep_alive = False
        if not _bodiless(status):
            if length is not None:
                headers["Content-Length"] = str(length)
            elif self.method != "HEAD" and self._message.version >= (1, 1):
                headers["Transfer-Encoding"] = "chunked"
                self._chunked = True
            elif self.method != "HEAD":
                self._keep_alive = False  # HTTP/1.0: the body ends where the connection does
        if not self._keep_alive:
            headers["Connection"] = "close"
        elif self._message.version < (1, 1):
            headers["Connection"] = "keep-alive"
        if "Date" not in headers:
            headers["Date"] = self._conn.date()
        return head_bytes(status, headers)

    def reusable(self) -> bool:
        """Whether the connection can carry the next request: answered in full, and no close asked or announced."""
        return self._finished and self._keep_alive


def internal_error(exchange: Exchange) -> None:
    """A 500 where the handler failed before answering; past that point the connection just closes."""
    if exchange.status:
        return
    exchange.close_connection()
    body = orjson.dumps({"error": "internal_error", "message": "the proxy failed to handle this request"})
    exchange.answer(500, CIMultiDict({"Content-Type": "application/json"}), body)


def _bodiless(status: int) -> bool:
    return status < 200 or status in (204, 304)
