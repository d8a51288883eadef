"""Large answers over plain HTTP go socket to socket (splice); what reaches the caller is exact either way."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from services.auth_proxy.metrics import STREAMED
from services.auth_proxy.transport.splice import SPLICE_SUPPORTED
from tests.proxy.conftest import Proxy
from tests.third_party import ThirdParty, pattern_bytes

pytestmark = pytest.mark.skipif(not SPLICE_SUPPORTED, reason="os.splice is Linux-only")

SIZE = 5_000_003  # not a multiple of any pipe, read or write size


def streamed(how: str) -> float:
    return STREAMED.labels(how)._value.get()  # type: ignore[attr-defined,no-any-return]


async def test_large_answers_are_spliced_exactly_over_one_kept_alive_connection(proxy: Proxy) -> None:
    before = streamed("splice")
    for _ in range(3):
        response = await proxy.get(f"/pattern?size={SIZE}")
        assert response.status == 200 and response.headers["Content-Length"] == str(SIZE)
        assert await response.read() == pattern_bytes(SIZE)
    assert streamed("splice") - before == 3
    # The upstream connection went back to the pool after each body and was used again.
    assert len(set(proxy.party.api_peers)) == 1


async def test_with_splice_off_the_copy_path_gives_the_same_bytes(
    start_proxy: Callable[..., Any], party: ThirdParty
) -> None:
    before = streamed("copy"), streamed("splice")
    async with start_proxy(party, proxy_splice=False) as proxy:
        response = await proxy.get(f"/pattern?size={SIZE}")
        assert await response.read() == pattern_bytes(SIZE)
    assert (streamed("copy"), streamed("splice")) == (before[0] + 1, before[1])


async def test_answers_within_the_buffer_limit_are_not_spliced(proxy: Proxy) -> None:
    before = streamed("splice"), streamed("copy")
    size = proxy.settings.proxy_buffer_response_limit
    response = await proxy.get(f"/pattern?size={size}")
    assert await response.read() == pattern_bytes(size)
    assert (streamed("splice"), streamed("copy")) == before


async def test_a_slow_caller_gets_every_byte_in_order(proxy: Proxy) -> None:
    """A caller with a tiny receive window: the relay waits on the caller's socket, again and again."""
    parts = urlsplit(proxy.url)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (parts.hostname, parts.port))
    await loop.sock_sendall(sock, b"GET /pattern?size=%d HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: acme\r\n\r\n" % SIZE)
    received = bytearray()
    while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < SIZE:
        chunk = await loop.sock_recv(sock, 1024)
        assert chunk, "the proxy closed the connection early"
        received += chunk
    sock.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == pattern_bytes(SIZE)


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
async def test_upstream_cut_mid_body_cuts_the_caller_and_spares_the_next_request(
    start_proxy: Callable[..., Any],
    party: ThirdParty,
    splice: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with start_proxy(party, proxy_splice=splice) as proxy:
        response = await proxy.get(f"/pattern?size={SIZE}&cut=1000000")
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
        # The next answer is whole, on a new upstream connection: the cut one is not reused.
        again = await proxy.get(f"/pattern?size={SIZE}")
        assert await again.read() == pattern_bytes(SIZE)
    assert party.api_peers[0] != party.api_peers[1]
    # One warning of ours, not aiohttp's traceback at error level.
    assert [r.levelname for r in caplog.records if "upstream failed mid-response" in str(r.msg)] == ["WARNING"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
async def test_upstream_silent_mid_body_times_out(
    start_proxy: Callable[..., Any], party: ThirdParty, splice: bool
) -> None:
    async with start_proxy(party, proxy_read_timeout=0.3, proxy_splice=splice) as proxy:
        response = await proxy.get(f"/pattern?size={SIZE}&cut=1000000&stall=30")
        assert response.status == 200
        # Cut by the proxy's read timeout, long before the upstream would have dropped it.
        async with asyncio.timeout(5):
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        party.unstall.set()


async def test_caller_leaving_mid_body_costs_nothing_else(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    response = await proxy.get(f"/pattern?size={SIZE}")
    await response.content.readexactly(100_000)
    response.close()
    again = await proxy.get(f"/pattern?size={SIZE}")
    assert await again.read() == pattern_bytes(SIZE)
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


async def test_no_descriptor_is_left_behind(proxy: Proxy) -> None:
    """Duplicated descriptors are closed and pipes reused: many answers, a bounded number of open files."""
    await (await proxy.get(f"/pattern?size={SIZE}")).read()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert len(await (await proxy.get(f"/pattern?size={SIZE}")).read()) == SIZE
    assert len(os.listdir("/proc/self/fd")) <= before


async def test_a_pipe_too_small_to_be_worth_it_means_copying(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user past fs.pipe-user-pages-soft gets pipes of a page or two: those answers are copied."""
    monkeypatch.setattr("services.auth_proxy.transport.splice._PIPE_MIN", 1 << 30)
    before = streamed("splice"), streamed("copy")
    response = await proxy.get(f"/pattern?size={SIZE}")
    assert await response.read() == pattern_bytes(SIZE)
    assert (streamed("splice"), streamed("copy")) == (before[0], before[1] + 1)
