"""End to end: 4-second tokens under sustained load, and the upstream never sees an expired one.

Proxy, scheduler and worker run as real processes against a real token endpoint and a
recording upstream (tests/third_party.py) that checks every bearer token against the expiry it
issued it with. Two providers' ways of saying when a token dies:

- provider ``demo``: opaque tokens valid for the 4 s ``expires_in`` says;
- provider ``jwt``: JWT access tokens whose ``exp`` is 1.5 s after issue while ``expires_in`` still
  says 4 s, so only a proxy that reads the JWT stops in time (shared/token_expiry.py). Code that
  trusted ``expires_in`` alone refreshed at half of 4 s and sent each token for a while after it died.

Both providers serve both tenants in one run of the processes, under the same load.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from devtools.processes import free_port
from tests.e2e.processes import Services, base_env, wait_ready
from tests.helpers import tenants_file
from tests.third_party import running_third_party

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LOAD_SECONDS = 10.0
TENANTS = ["acme", "globex"]
# Provider name -> the JWT's life (None: opaque tokens); expires_in says 4 s for both.
PROVIDERS = {"demo": None, "jwt": 1.5}


async def _caller(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], until: float, statuses: Counter[int]
) -> None:
    while time.monotonic() < until:
        async with session.get(f"{url}/resources/42", headers=headers) as response:
            await response.read()
            statuses[response.status] += 1


async def test_no_expired_token_reaches_the_upstream_under_load(
    redis_url: str, redis: object, database_url: str, token_key: SecretStr, tmp_path: Path
) -> None:
    async with (
        running_third_party(lifetime=4) as opaque,
        running_third_party(lifetime=4, jwt_lifetime=PROVIDERS["jwt"]) as jwt,
    ):
        parties = {"demo": opaque, "jwt": jwt}
        ports = {name: free_port() for name in ("proxy", "importer", "scheduler")}
        env = base_env(
            CONDUIT_REDIS_URL=redis_url,
            CONDUIT_DATABASE_URL=database_url,
            CONDUIT_TENANTS_FILE=str(tenants_file(tmp_path, opaque, TENANTS, extra_providers={"jwt": jwt})),
            CONDUIT_TOKEN_KEY=token_key.get_secret_value(),
            CONDUIT_PROXY_HOST="127.0.0.1",
            CONDUIT_PROXY_PORT=str(ports["proxy"]),
            CONDUIT_IMPORTER_HTTP_PORT=str(ports["importer"]),
            CONDUIT_SCHEDULER_HTTP_PORT=str(ports["scheduler"]),
            CONDUIT_IMPORTER_POLL_DELAY="0.1",
        )
        services = Services(env, tmp_path)
        proxy = services.start("proxy", "proxy", ops_port=ports["proxy"])
        for name in ("importer", "scheduler"):
            services.start(name, name, ops_port=ports[name])
        statuses: Counter[int] = Counter()
        try:
            async with aiohttp.ClientSession() as session:
                for service in services.running:
                    await wait_ready(session, service)
                issued_before = {name: len(party.tokens) for name, party in parties.items()}
                until = time.monotonic() + LOAD_SECONDS
                await asyncio.gather(
                    *(
                        _caller(session, proxy.ops_url, {"X-Tenant-ID": t, "X-Provider": p}, until, statuses)
                        for t in TENANTS
                        for p in PROVIDERS
                        for _ in range(3)
                    )
                )
        finally:
            codes = services.stop_all()

    for name, party in parties.items():
        late = sorted(party.expired_calls)
        assert late == [], f"{name}: {len(late)} calls with an expired token, up to {late[-1]:.3f}s late"
        # The tokens were replaced on their own clock: at about half of 1.5 s, or of 4 s.
        issued = len(party.tokens) - issued_before[name]
        assert issued >= len(TENANTS) * LOAD_SECONDS / (PROVIDERS[name] or 4.0), (name, issued)
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 500, statuses
    assert codes == {"proxy": 0, "importer": 0, "scheduler": 0}
    logs = "\n".join(s.output() for s in services.running)
    leaked = [t[:12] for party in parties.values() for t in party.tokens if t in logs or t.split(".")[-1] in logs]
    assert not leaked, f"tokens in the logs: {leaked}"
