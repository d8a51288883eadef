"""SIGTERM drains: a request in flight when the proxy is told to stop still gets its answer."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from devtools.processes import free_port
from tests.e2e.processes import Services, base_env, wait_ready
from tests.helpers import tenants_file
from tests.third_party import ThirdParty, running_third_party

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture
async def party() -> AsyncIterator[ThirdParty]:
    async with running_third_party() as tp:
        yield tp


async def test_sigterm_lets_in_flight_requests_finish(
    party: ThirdParty, redis_url: str, redis: object, token_key: SecretStr, tmp_path: Path
) -> None:
    port = free_port()
    env = base_env(
        CONDUIT_REDIS_URL=redis_url,
        CONDUIT_TENANTS_FILE=str(tenants_file(tmp_path, party, ["acme"])),
        CONDUIT_TOKEN_KEY=token_key.get_secret_value(),
        CONDUIT_PROXY_HOST="127.0.0.1",
        CONDUIT_PROXY_PORT=str(port),
    )
    services = Services(env, tmp_path)
    proxy = services.start("proxy", "proxy", ops_port=port)
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
