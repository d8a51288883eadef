"""Zero-copy body relay: the rest of a sized upstream body goes socket → pipe → socket with ``splice(2)``.

Copying a 1 MB body through Python costs more than everything else the proxy
does for it: each read becomes a bytes object, each partial send a copy into
the transport's buffer, and every chunk a few task switches. Where both legs
are plain TCP (the upstream is ``http://``, as behind a TLS-originating egress
gateway, and callers reach the proxy without TLS) and the length is known, the
kernel can move the bytes itself, the way HAProxy's ``splice-auto`` does. The
body never enters the process, so memory stays flat however many large
answers are in flight. Anything else (TLS, chunked answers, no ``os.splice``)
takes the ordinary streaming copy in ``forward.py``.

The relay owns both sockets for the body's duration: the upstream connection's
reads are paused and nothing else writes to the caller's transport. It waits on
duplicates of the two descriptors because asyncio refuses ``add_reader`` on a
descriptor a transport holds; every registration is removed before its
duplicate is closed, else epoll would keep it alive under a reused number.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket

SPLICE_SUPPORTED = hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK")
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_MORE = getattr(os, "SPLICE_F_MORE", 0)
# A 256 KiB pipe moves a 1 MB body in four rounds instead of sixteen: 64 KiB measured about 15%
# more CPU per 1 MB answer in bench/proxy.py, 1 MiB no less than 256 KiB. It is kernel memory,
# taken only while bytes are in it.
_PIPE_SIZE = 256 << 10
# A pipe granted less than this (a user past fs.pipe-user-pages-soft gets a page or two) would
# take hundreds of rounds per megabyte: such answers are copied instead.
_PIPE_MIN = 64 << 10
# Pipes kept for reuse. Their size counts against the user's pipe pages while kept, so not one
# per connection: past this many at once, a pipe is made for the answer and closed after it.
_POOL_MAX = 64


class UpstreamCut(Exception):
    """The upstream closed or failed before the whole body arrived."""


class CallerGone(Exception):
    """The caller closed its connection before the whole body was sent."""


def plain_socket(transport: asyncio.BaseTransport | None) -> socket.socket | None:
    """The transport's socket, if the transport moves its bytes unchanged (no TLS)."""
    if transport is None or transport.is_closing() or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    return sock  # type: ignore[no-any-return]


Pipe = tuple[int, int, int]  # read end, write end, capacity


class Pipes:
    """Pipes for the relay, reused: four syscalls fewer per answer, and the size set once."""

    def __init__(self) -> None:
        self._free: list[Pipe] = []

    def take(self) -> Pipe | None:
        """An empty pipe; None where the kernel only grants a few pages (then copying is cheaper)."""
        if self._free:
            return self._free.pop()
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        capacity = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        if capacity < _PIPE_MIN:
            _close(read_end, write_end)
            return None
        return read_end, write_end, capacity

    def give_back(self, pipe: Pipe, empty: bool) -> None:
        """A pipe that may still hold bytes of a cut body is closed, never reused."""
        if empty and len(self._free) < _POOL_MAX:
            self._free.append(pipe)
        else:
            _close(pipe[0], pipe[1])

    def close(self) -> None:
        for read_end, write_end, _ in self._free:
            _close(read_end, write_end)
        self._free.clear()


async def relay(
    source: socket.socket, sink: socket.socket, length: int, pipe: Pipe, pipes: Pipes, read_timeout: float
) -> None:
    """Move exactly ``length`` bytes from ``source`` to ``sink`` through ``pipe``, then give it back to ``pipes``.

    Raises ``UpstreamCut`` or ``TimeoutError`` (``read_timeout`` seconds without
    a byte from the upstream, not counting time the caller held us up) and
    ``CallerGone``.
    """
    pump = _Pump(os.dup(source.fileno()), os.dup(sink.fileno()), pipe)
    try:
        await pump.run(length, read_timeout)
    finally:
        pipes.give_back(pump.pipe, empty=pump.in_pipe == 0)
        _close(pump.src, pump.dst)


async def flushed(transport: asyncio.Transport, sink: socket.socket) -> None:
    """Until the transport has handed all it holds to its socket: from then on the socket is the relay's to write."""
    if not transport.get_write_buffer_size():
        return
    loop = asyncio.get_running_loop()
    fd = os.dup(sink.fileno())
    try:
        while transport.get_write_buffer_size():
            if transport.is_closing():
                raise CallerGone("the caller's connection closed")
            # The transport's own writer runs on the same readiness, before this task resumes.
            await _ready(loop, fd, True, None)
    finally:
        _close(fd)


class _Pump:
    def __init__(self, src: int, dst: int, pipe: Pipe) -> None:
        self.src, self.dst, self.pipe = src, dst, pipe
        self.in_pipe = 0

    async def run(self, left: int, read_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        read_end, write_end, capacity = self.pipe
        src, dst = self.src, self.dst
        while left or self.in_pipe:
            moved = False
            if left and self.in_pipe < capacity:
                got = _splice_in(src, write_end, min(left, capacity - self.in_pipe))
                if got:
                    left -= got
                    self.in_pipe += got
                    moved = True
            if self.in_pipe:
                sent = _splice_out(read_end, dst, self.in_pipe, more=bool(left))
                if sent:
                    self.in_pipe -= sent
                    moved = True
            if moved:
                continue
            # Nothing moved: the caller is not taking what the pipe holds, or the upstream has sent nothing new.
            if self.in_pipe:
                await _ready(loop, dst, True, None)
            else:
                await _ready(loop, src, False, read_timeout)


def _splice_in(src: int, write_end: int, count: int) -> int:
    try:
        got = os.splice(src, write_end, count, flags=_FLAGS)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise UpstreamCut(f"upstream read failed: {exc.strerror or type(exc).__name__}") from None
    if got == 0:
        raise UpstreamCut("upstream closed the connection before the end of the body")
    return got


def _splice_out(read_end: int, dst: int, count: int, more: bool) -> int:
    try:
        return os.splice(read_end, dst, count, flags=_FLAGS | (_MORE if more else 0))
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise CallerGone(exc.strerror or type(exc).__name__) from None


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, writable: bool, timeout: float | None) -> None:
    waiter = loop.create_future()
    if writable:
        loop.add_writer(fd, _wake, waiter)
    else:
        loop.add_reader(fd, _wake, waiter)
    timer = loop.call_later(timeout, _expire, waiter) if timeout else None
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
