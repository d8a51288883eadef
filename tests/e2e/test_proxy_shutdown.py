"""SIGTERM drains: a request in flight when the proxy is told to stop still gets its answer."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.e2e.processes import Service, Services, wait_ready
from tests.third_party import ThirdParty, pattern_bytes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


async def test_sigterm_lets_in_flight_requests_finish(
    party: ThirdParty, proxy_process: Callable[..., tuple[Services, Service]]
) -> None:
    _, proxy = proxy_process()
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, proxy)
        party.api_called.clear()
        slow = asyncio.ensure_future(session.get(f"{proxy.ops_url}/slow?delay=1.5", headers={"X-Tenant-ID": "acme"}))
        # Signal only once the request has reached the upstream, i.e. it is really in flight.
        await asyncio.wait_for(party.api_called.wait(), 10)
        proxy.proc.send_signal(signal.SIGTERM)
        response = await slow
        assert response.status == 200 and (await response.json()) == {"slow": True}
        response.release()
    assert proxy.proc.wait(30) == 0
    assert '"proxy stopped"' in proxy.output()


@pytest.mark.parametrize("splice", ["true", "false"], ids=["splice", "copy"])
async def test_sigterm_lets_a_large_answer_in_flight_finish(
    proxy_process: Callable[..., tuple[Services, Service]], splice: str
) -> None:
    size = 64 << 20
    _, proxy = proxy_process(CONDUIT_PROXY_SPLICE=splice)
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, proxy)
        response = await session.get(f"{proxy.ops_url}/pattern?size={size}", headers={"X-Tenant-ID": "acme"})
        # The headers are here and the body is on its way; unread, most of it waits upstream.
        body = bytearray(await response.content.readexactly(1 << 20))
        proxy.proc.send_signal(signal.SIGTERM)
        await _refusing_connections(proxy)
        body += await response.read()
    assert body == pattern_bytes(size)
    assert proxy.proc.wait(30) == 0
    assert '"proxy stopped"' in proxy.output()


async def _refusing_connections(proxy: Service) -> None:
    """Until the stopping proxy has closed its listening socket (while the answer above is still unread)."""
    url = urlsplit(proxy.ops_url)
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection(url.hostname, url.port)
            except ConnectionError:  # refused, or reset by a listener closing mid-handshake
                return
            writer.close()
            await asyncio.sleep(0.05)
