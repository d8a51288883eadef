"""A 1 GB response passes through the proxy process with its memory flat (streaming with backpressure)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from devtools.processes import free_port
from tests.e2e.processes import Services, base_env, wait_ready
from tests.helpers import tenants_file
from tests.third_party import ThirdParty, running_third_party

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SIZE = 1 << 30


@pytest.fixture
async def party() -> AsyncIterator[ThirdParty]:
    async with running_third_party() as tp:
        yield tp


async def test_one_gigabyte_streams_with_flat_memory(
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
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, proxy)
            async with session.get(f"{proxy.ops_url}/big?size=1000", headers={"X-Tenant-ID": "acme"}) as warm:
                assert warm.status == 200 and len(await warm.read()) == 1000
            baseline = proxy.rss_peak_kb()
            received = 0
            async with session.get(f"{proxy.ops_url}/big?size={SIZE}", headers={"X-Tenant-ID": "acme"}) as response:
                assert response.status == 200
                async for chunk in response.content.iter_chunked(1 << 20):
                    received += len(chunk)
            peak = proxy.rss_peak_kb()
    finally:
        assert services.stop_all() == {"proxy": 0}
    assert received == SIZE
    # 1 GiB went through; the proxy's peak resident memory grew by less than 32 MiB.
    assert peak - baseline < 32 * 1024, (baseline, peak)
