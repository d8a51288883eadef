"""SIGTERM drains: a request in flight when the proxy is told to stop still gets its answer."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import aiohttp
import pytest

from tests.e2e.processes import Service, Services, wait_ready
from tests.third_party import ThirdParty

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
