"""End to end: proxy, scheduler and worker as real processes, two tenants, 2-second tokens.

For 20 seconds callers hammer the proxy. Every request must succeed with a
token the third party accepts, the token endpoint must see about one call per
second per tenant (one per refresh, never two), the refreshes must come from
the scheduled path (so no request waited on one), and no secret may appear in
any process's log.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from devtools.processes import free_port
from tests.e2e.processes import Services, base_env, wait_ready
from tests.helpers import tenants_file
from tests.third_party import ThirdParty, running_third_party

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LOAD_SECONDS = 10.0
TENANTS = ["acme", "globex"]


@pytest.fixture
async def party() -> AsyncIterator[ThirdParty]:
    async with running_third_party(lifetime=2) as tp:
        yield tp


async def _caller(session: aiohttp.ClientSession, url: str, tenant: str, until: float, statuses: Counter[int]) -> None:
    while time.monotonic() < until:
        async with session.get(f"{url}/resources/42", headers={"X-Tenant-ID": tenant}) as response:
            await response.read()
            statuses[response.status] += 1


def _metric(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                values[tuple(sorted(sample.labels.items()))] = sample.value
    return values


async def test_steady_load_with_two_second_tokens(
    party: ThirdParty, redis_url: str, redis: object, database_url: str, token_key: SecretStr, tmp_path: Path
) -> None:
    path = tenants_file(tmp_path, party, TENANTS)
    ports = {name: free_port() for name in ("proxy", "importer", "scheduler")}
    env = base_env(
        CONDUIT_REDIS_URL=redis_url,
        CONDUIT_DATABASE_URL=database_url,
        CONDUIT_TENANTS_FILE=str(path),
        CONDUIT_TOKEN_KEY=token_key.get_secret_value(),
        CONDUIT_LOG_LEVEL="DEBUG",
        CONDUIT_PROXY_HOST="127.0.0.1",
        CONDUIT_PROXY_PORT=str(ports["proxy"]),
        CONDUIT_IMPORTER_HTTP_PORT=str(ports["importer"]),
        CONDUIT_SCHEDULER_HTTP_PORT=str(ports["scheduler"]),
        CONDUIT_IMPORTER_POLL_DELAY="0.1",
    )
    services = Services(env, tmp_path)
    proxy = services.start("proxy", "proxy", ops_port=ports["proxy"])
    worker = services.start("importer", "importer", ops_port=ports["importer"])
    scheduler = services.start("scheduler", "scheduler", ops_port=ports["scheduler"])
    statuses: Counter[int] = Counter()
    try:
        async with aiohttp.ClientSession() as session:
            for service in (proxy, worker, scheduler):
                await wait_ready(session, service)
            # Warm up: the first token of each tenant may be fetched on demand.
            for tenant in TENANTS:
                async with session.get(f"{proxy.ops_url}/x", headers={"X-Tenant-ID": tenant}) as response:
                    assert response.status == 200
            calls_before = len(party.token_calls)
            metrics_before = await (await session.get(f"{proxy.ops_url}/metrics")).text()
            until = time.monotonic() + LOAD_SECONDS
            await asyncio.gather(
                *(_caller(session, proxy.ops_url, t, until, statuses) for t in TENANTS for _ in range(8))
            )
            metrics_after = await (await session.get(f"{proxy.ops_url}/metrics")).text()
    finally:
        codes = services.stop_all()

    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 1000
    calls = party.token_calls[calls_before:]
    for tenant in TENANTS:
        mine = sorted(c.at for c in calls if c.client_id == f"{tenant}-demo")
        # Refresh at 40-50% of a 2 s life: about one call a second, never two for one refresh.
        assert LOAD_SECONDS * 0.8 <= len(mine) <= LOAD_SECONDS / 0.8 + 2, (tenant, len(mine))
        gaps = [b - a for a, b in zip(mine, mine[1:], strict=False)]
        assert min(gaps) > 0.5, (tenant, min(gaps))
    # Nothing refreshed on a request's behalf during the load: every refresh was scheduled.
    waited_before = _metric(metrics_before, "conduit_token_refreshes_total")
    waited_after = _metric(metrics_after, "conduit_token_refreshes_total")
    assert waited_after == waited_before, "the proxy refreshed on a request's behalf"
    assert _metric(metrics_after, "conduit_token_refresh_failures_total") == {}
    assert codes == {"proxy": 0, "importer": 0, "scheduler": 0}

    secrets = [s for c in party.clients.values() for s in [c]] + list(party.tokens) + [token_key.get_secret_value()]
    logs = {s.name: s.output() for s in services.running}
    assert all(logs.values())
    for name, text in logs.items():
        leaked = [s[:6] + "..." for s in secrets if s in text]
        assert not leaked, f"{name} log contains secrets {leaked}"
    assert '"/health_check"' not in logs["proxy"] and "/health_check" not in logs["proxy"]
