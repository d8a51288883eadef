"""Every private aiohttp and asyncio member the proxy's transport relies on, and nowhere else.

The transport (server.py, exchange.py, upstream.py, upstream_connection.py) is built on aiohttp's
parser, protocols and serializer rather than on ``aiohttp.web`` and
``ClientSession`` (see server.py and upstream.py for why). A few of the
members it needs are private: aiohttp may rename or drop them in any release.
They are all reached here, each with what it relies on, so that an upgrade
has one file to read. Each one is looked up when this module is imported:
a missing one stops the proxy at start with ``AiohttpChanged`` naming it,
never in the middle of a request. ``pyproject.toml`` pins aiohttp to the
minor version these were checked against; ``missing()`` lists what a given
install lacks (tests/proxy/test_aiohttp_private.py, and ``make
test-aiohttp-next`` against the next minor release).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import http_writer
from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict


class AiohttpChanged(ImportError):
    """An installed aiohttp or asyncio lacks a private member the proxy's transport relies on."""


# (where, member, what the transport relies on it for): checked at import and by missing().
RELIED_ON: list[tuple[object, str, str]] = []


def _require(owner: object, name: str, why: str) -> Any:
    RELIED_ON.append((owner, name, why))
    try:
        return getattr(owner, name)
    except AttributeError:
        raise AiohttpChanged(_missing_message(owner, name, why)) from None


def _missing_message(owner: object, name: str, why: str) -> str:
    where = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", repr(owner))
    return (
        f"aiohttp {aiohttp.__version__} has no {where}.{name}, which the proxy's transport relies on ({why}); "
        "see services/auth_proxy/transport/aiohttp_private.py"
    )


# -- aiohttp.http_writer

# _serialize_headers(status_line, headers) -> bytes: the C serializer aiohttp's own writer uses
# for every response head; it raises ValueError on CR or LF in any name or value.
serialize_headers: Callable[[str, CIMultiDict[str]], bytes] = _require(
    http_writer, "_serialize_headers", "the response head serializer that refuses CR/LF"
)

# -- aiohttp.base_protocol.BaseProtocol (both our server and upstream connections are one).
# Its state lives in __slots__, so every attribute below is a class-level descriptor that can be checked.

_BASE_SLOTS = {
    "_loop": "the event loop the protocol was made with",
    "_parser": "the llhttp parser data_received feeds; None stops parsing (after an Upgrade, or a refusal)",
    "_upgraded": "True makes pause_reading/resume_reading leave the parser alone (after an Upgrade)",
    "_buffer_paused": "whether reading is held by _pause_reading_for_buffer",
    "_reading_paused": "whether reading is held by the body reader's flow control (pause_reading)",
}
for _name, _why in _BASE_SLOTS.items():
    _require(BaseProtocol, _name, _why)

_pause_for_buffer: Callable[[BaseProtocol], None] = _require(
    BaseProtocol,
    "_pause_reading_for_buffer",
    "holds the transport's reads for a buffer of our own (the queue of parsed requests), apart from flow control",
)
_resume_for_buffer: Callable[[BaseProtocol], None] = _require(
    BaseProtocol, "_resume_reading_for_buffer", "releases that hold unless flow control still holds reading"
)
_drain_helper: Callable[[BaseProtocol], Awaitable[None]] = _require(
    BaseProtocol,
    "_drain_helper",
    "waits while the transport's write buffer is above its high-water mark; raises once the connection is lost",
)


class Protocol(BaseProtocol):
    """``BaseProtocol`` with the private members the transport uses under names this package owns."""

    pause_for_buffer = _pause_for_buffer
    resume_for_buffer = _resume_for_buffer

    async def drain(self) -> None:
        await _drain_helper(self)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def parser(self) -> Any:
        """The request parser (aiohttp's ``HttpRequestParser``); None once parsing stopped."""
        return self._parser

    @property
    def buffer_paused(self) -> bool:
        return self._buffer_paused

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    def stop_parsing(self, upgraded: bool = False) -> None:
        """No more bytes go to the parser; ``upgraded``: nor do pause/resume touch it."""
        self._parser = None
        if upgraded:
            self._upgraded = True


# -- aiohttp.client_proto.ResponseHandler (one upstream connection)

_on_read_timeout: Callable[[ResponseHandler], None] = _require(
    ResponseHandler,
    "_on_read_timeout",
    "fails the answer being read with aiohttp's ServerTimeoutError, as its own read timer does",
)


class ResponseProtocol(ResponseHandler):
    """``ResponseHandler`` with the private members the upstream pool uses under names this package owns."""

    fire_read_timeout = _on_read_timeout

    async def drain(self) -> None:
        """As ``Protocol.drain``: a ResponseHandler is a BaseProtocol."""
        await _drain_helper(self)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    @property
    def parser(self) -> Any:
        """The response parser set by ``set_response_params``; None until the next one."""
        return self._parser

    def drop_parser(self) -> None:
        """The next answer gets a new parser (set_response_params): the last one expects bytes that went around it."""
        self._parser = None


# -- asyncio's TLS transport (Python 3.11's asyncio.sslproto)

_require(asyncio.sslproto.SSLProtocol, "max_size", "how much ciphertext one read takes from the socket")
_SSL_INSTANCE = {
    "_ssl_buffer": "the bytearray the ciphertext is read into, max_size long",
    "_ssl_buffer_view": "the memoryview over it handed to the socket read",
}
_SSL_TRANSPORT = ("_ssl_protocol", "the SSLProtocol behind an _SSLProtocolTransport")


def shrink_ciphertext_buffer(transport: asyncio.BaseTransport, size: int) -> bool:
    """Receive a TLS connection's ciphertext ``size`` bytes at a time instead of asyncio's 256 KiB.

    asyncio has no setting for it: this sets the attributes of 3.11's
    ``SSLProtocol`` where they are what this code expects (whether it did is
    returned), else leaves the connection as it is.
    """
    protocol = getattr(transport, _SSL_TRANSPORT[0], None)
    if not isinstance(getattr(protocol, "_ssl_buffer", None), bytearray) or not isinstance(
        getattr(protocol, "max_size", None), int
    ):
        return False
    buffer = bytearray(size)
    protocol.max_size = size  # type: ignore[union-attr]
    protocol._ssl_buffer = buffer  # type: ignore[union-attr]
    protocol._ssl_buffer_view = memoryview(buffer)  # type: ignore[union-attr]
    return True


def missing() -> list[str]:
    """What the installed aiohttp and asyncio lack of the members above: one message per member."""
    gone = [_missing_message(owner, name, why) for owner, name, why in RELIED_ON if not hasattr(owner, name)]
    gone += _missing_in_tls_transport()
    return gone


def _missing_in_tls_transport() -> list[str]:
    """The TLS members are set per instance: made on a loop of their own, never connected."""
    loop = asyncio.new_event_loop()
    try:
        waiter = loop.create_future()
        protocol = asyncio.sslproto.SSLProtocol(loop, asyncio.Protocol(), ssl.create_default_context(), waiter)
        transport = protocol._get_app_transport()  # type: ignore[attr-defined]
        transport.abort()  # never connected: nothing to close but the object itself
    finally:
        loop.close()
    gone = [
        _missing_message(asyncio.sslproto.SSLProtocol, name, why)
        for name, why in _SSL_INSTANCE.items()
        if not hasattr(protocol, name)
    ]
    if getattr(transport, _SSL_TRANSPORT[0], None) is not protocol:
        gone.append(_missing_message(type(transport), *_SSL_TRANSPORT))
    return gone
