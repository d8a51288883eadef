"""The demo third party's exports, imported through the real auth proxy: the importer never holds a token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import yaml
from pydantic import SecretStr

from demo.app import DemoSettings
from demo.app import create_app as create_demo
from services.auth_proxy.app import create_app, running_proxy
from services.auth_proxy.settings import ProxySettings
from shared.modules import catalogue
from shared.tenants import load_tenants
from tests.importer.conftest import Importer
from tests.third_party import serve


def demo_tenants(tmp_path: Path, demo_url: str) -> Path:
    tenants = {}
    for tenant in ("acme", "globex"):
        secret = tmp_path / f"{tenant}.secret"
        secret.write_text(f"{tenant}-secret")
        tenants[tenant] = {
            "providers": {"demo": {"client_id": f"{tenant}-demo", "client_secret": {"file": str(secret)}}}
        }
    provider = {"token_url": f"{demo_url}/oauth/token", "api_base_url": f"{demo_url}/api/", "scopes": ["export"]}
    path = tmp_path / "proxy-tenants.yaml"
    path.write_text(yaml.safe_dump({"providers": {"demo": provider}, "tenants": tenants}))
    return path


@asynccontextmanager
async def demo_behind_proxy(
    tmp_path: Path, redis_url: str, token_key: SecretStr, **demo: object
) -> AsyncIterator[tuple[str, str]]:
    settings = DemoSettings(
        clients="acme-demo=acme-secret;globex-demo=globex-secret", export_cache_dir=tmp_path / "cache", **demo
    )  # type: ignore[arg-type]
    async with serve(create_demo(settings)) as demo_url:
        path = demo_tenants(tmp_path, demo_url)
        proxy = ProxySettings(redis_url=redis_url, tenants_file=path, token_key=token_key, proxy_access_log=False)
        async with running_proxy(create_app(proxy, load_tenants(path))) as proxy_url:
            yield demo_url, proxy_url


async def test_demo_exports_import_through_the_real_proxy(
    importer: Importer, tmp_path: Path, redis_url: str, token_key: SecretStr
) -> None:
    rows = {"invoices": 700, "invoice_lines": 900}
    async with demo_behind_proxy(tmp_path, redis_url, token_key, export_rows=50, export_rows_per_module=rows) as (
        _,
        proxy_url,
    ):
        via_proxy = importer.with_settings(proxy_url=proxy_url)
        for module in ("invoices", "invoice_lines", "contacts", "legacy_customers", "stock_levels"):
            result = await via_proxy.run("acme", module, "2024-05-01")
            assert result.startswith("succeeded"), (module, result)
        assert (await via_proxy.run("globex", "invoices", "2024-05-01")).startswith("succeeded")

    counts = await importer.db.rows("SELECT tenant_id, count(*) AS n FROM invoices GROUP BY 1 ORDER BY 1")
    assert counts == [{"tenant_id": "acme", "n": 700}, {"tenant_id": "globex", "n": 700}]
    assert await importer.db.value("SELECT count(*) FROM invoice_lines") == 900
    assert await importer.db.value("SELECT count(*) FROM legacy_customers") == 50
    # Same module and day, other tenant: other data (the demo seeds by client).
    differs = await importer.db.value(
        "SELECT count(*) FROM invoices a JOIN invoices b USING (invoice_id) "
        "WHERE a.tenant_id = 'acme' AND b.tenant_id = 'globex' AND a.net_total <> b.net_total"
    )
    assert differs > 600


async def test_demo_exports_are_deterministic_and_sized_on_request(
    tmp_path: Path, redis_url: str, token_key: SecretStr
) -> None:
    async with demo_behind_proxy(tmp_path, redis_url, token_key) as (demo_url, proxy_url):
        async with aiohttp.ClientSession() as session:

            async def get(path: str, tenant: str = "acme") -> tuple[int, bytes]:
                async with session.get(proxy_url + path, headers={"X-Tenant-ID": tenant}) as response:
                    return response.status, await response.read()

            first, again, bigger, other_day = await asyncio.gather(
                get("/exports/items?date=2024-05-01&rows=200"),
                get("/exports/items?date=2024-05-01&rows=200"),
                get("/exports/items?date=2024-05-01&rows=400"),
                get("/exports/items?date=2024-05-02&rows=200"),
            )
            missing = await get("/exports/unicorns?date=2024-05-01")
            bad_date = await get("/exports/items?date=yesterday")
            async with session.get(demo_url + "/api/exports/items?date=2024-05-01") as response:
                no_token = response.status
    assert first[0] == 200 and first == again
    assert bigger[1] != first[1] and len(bigger[1]) > len(first[1]) and other_day[1] != first[1]
    assert first[1].startswith(b'{"module_name": "items", "data": "UEsDB')  # base64 of a zip's "PK\x03\x04"
    assert missing[0] == 404 and bad_date[0] == 400 and no_token == 401
    assert len(catalogue()) >= 50
