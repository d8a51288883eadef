"""A 1 GB response passes through the proxy process with its memory flat, spliced or copied with backpressure."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from tests.e2e.processes import Service, Services, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SIZE = 1 << 30


@pytest.mark.parametrize("splice", ["true", "false"], ids=["splice", "copy"])
async def test_one_gigabyte_streams_with_flat_memory(
    proxy_process: Callable[..., tuple[Services, Service]], splice: str
) -> None:
    services, proxy = proxy_process(CONDUIT_PROXY_SPLICE=splice)
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
