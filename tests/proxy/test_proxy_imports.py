"""What serving does not need stays out of the proxy: the token client until it requests a token.

authlib, httpx2 and what they bring weigh about 4 MB in every proxy process,
which mostly never refreshes (workers refresh on schedule); croniter and asyncpg
are for the scheduler, the importer and `conduit migrate`. One top-level import
on the proxy's path would bring them back without any other test noticing, so a
fresh interpreter imports what `conduit proxy` imports, builds the proxy, serves
a request, and reports what is in its ``sys.modules``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
from pydantic import SecretStr
from redis.asyncio import Redis

from shared.crypto import Sealer
from shared.refresh import Refresher
from shared.tenants import load_tenants
from shared.token_store import TokenStore
from tests.helpers import tenants_file
from tests.third_party import ThirdParty

ROOT = Path(__file__).resolve().parents[2]
# Top-level packages only a token request uses, and some the proxy never uses.
TOKEN_REQUEST_ONLY = {"authlib", "httpx2", "httpcore2", "anyio", "joserfc", "h11"}
NOT_FOR_THE_PROXY = {"croniter", "dateutil", "asyncpg"}

CHILD = """
import asyncio, sys
import aiohttp, orjson
import conduit.cli  # as `conduit proxy` does
from services.auth_proxy.app import create_app, running_proxy

async def main():
    async with running_proxy(create_app()) as url, aiohttp.ClientSession() as session:
        async with session.get(url + "/x", headers={"X-Tenant-ID": "acme"}) as response:
            status = response.status
    report = {"status": status, "modules": sorted({m.split(".")[0] for m in sys.modules})}
    # A file of its own: stdout also carries whatever the proxy logs (an event not published, say).
    with open(sys.argv[1], "wb") as out:
        out.write(orjson.dumps(report))

asyncio.run(main())
"""


async def serve_one_request(redis_url: str, token_key: SecretStr, tenants: Path) -> tuple[int, set[str]]:
    report_file = tenants.with_name("child-report.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env |= {
        "CONDUIT_REDIS_URL": redis_url,
        "CONDUIT_TENANTS_FILE": str(tenants),
        "CONDUIT_TOKEN_KEY": token_key.get_secret_value(),
        "CONDUIT_LOG_LEVEL": "WARNING",
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(report_file), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await child.communicate()
    assert child.returncode == 0, err.decode()[-3000:]
    report = orjson.loads(report_file.read_bytes())
    return report["status"], set(report["modules"])


async def test_serving_with_a_stored_token_imports_no_token_client(
    redis: Redis, redis_url: str, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    tenants = tenants_file(tmp_path, party, ["acme"])
    refresher = Refresher(TokenStore(redis, Sealer(token_key)), load_tenants(tenants))
    await refresher.refresh("acme", "demo", trigger="operator")
    status, modules = await serve_one_request(redis_url, token_key, tenants)
    assert status == 200 and len(party.token_calls) == 1
    assert modules & (TOKEN_REQUEST_ONLY | NOT_FOR_THE_PROXY) == set()


async def test_the_first_refresh_imports_it_and_succeeds(
    redis: Redis, redis_url: str, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    # No token stored: the request waits for an on-demand refresh, which imports the client then.
    status, modules = await serve_one_request(redis_url, token_key, tenants_file(tmp_path, party, ["acme"]))
    assert status == 200 and len(party.token_calls) == 1
    assert {"authlib", "httpx2"} <= modules
