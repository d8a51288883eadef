"""One keep-alive connection to an upstream origin: aiohttp's ``ResponseHandler`` with a lean read path.

``UpstreamPool`` (upstream.py) opens, reuses and closes these. What this adds
to aiohttp's protocol: reads into one shared scratch buffer, a sized body
handed on past the parser (or around the process, see splice.py), and a read
timeout armed once instead of on every read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp.streams import StreamReader
from yarl import URL

from services.auth_proxy.transport.aiohttp_private import ResponseProtocol, shrink_ciphertext_buffer

# One read from a plain upstream socket (see UpstreamConnection.get_buffer): the head and small answers
# whole; 16 KiB saved no more. Over TLS, as much as is decrypted at once, up to the scratch size.
_READ_SIZE = 32 << 10
SCRATCH_SIZE = 256 << 10
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


class UpstreamConnection(ResponseProtocol, asyncio.BufferedProtocol):
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
