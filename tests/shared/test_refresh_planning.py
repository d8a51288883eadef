"""Which refreshes the scheduler enqueues, and with which ids (fakeredis: pure logic, no server needed)."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from arq.connections import ArqRedis

from services.scheduler.token_refresh import enqueue_refreshes, plan_refreshes
from shared import redis_keys
from shared.job_json import JsonArqRedis
from shared.tenants import TenantsConfig, load_tenants

TENANTS = """
providers:
  demo: {token_url: "http://idp.test/token", api_base_url: "http://api.test/"}
tenants:
  acme: {providers: {demo: {client_id: a, client_secret: {env: NOT_NEEDED}}}}
  globex: {providers: {demo: {client_id: g, client_secret: {env: NOT_NEEDED}}}}
  initech: {providers: {demo: {client_id: i, client_secret: {env: NOT_NEEDED}}}}
"""


@pytest.fixture
def tenants(tmp_path: Path) -> TenantsConfig:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS)
    return load_tenants(path, resolve_secrets=False)


@pytest.fixture
async def redis() -> ArqRedis:
    return JsonArqRedis(connection_pool=fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()).connection_pool)


async def test_plans_due_soon_and_never_refreshed(redis: ArqRedis, tenants: TenantsConfig) -> None:
    await redis.zadd(redis_keys.TOKENS_DUE, {"acme/demo": 1000.0, "globex/demo": 5000.0})
    planned = await plan_refreshes(redis, tenants, now=998.0, lookahead=5.0)
    by_tenant = {p.tenant: p for p in planned}
    assert set(by_tenant) == {"acme", "initech"}
    assert by_tenant["acme"].run_at == 1000.0 and by_tenant["acme"].job_id == "refresh:acme:demo:1000000"
    assert by_tenant["initech"].run_at is None and by_tenant["initech"].job_id == "refresh:initech:demo:init"


async def test_overdue_runs_now(redis: ArqRedis, tenants: TenantsConfig) -> None:
    await redis.zadd(redis_keys.TOKENS_DUE, {"acme/demo": 10.0, "globex/demo": 10.0, "initech/demo": 10.0})
    planned = await plan_refreshes(redis, tenants, now=500.0, lookahead=0.0)
    assert [p.run_at for p in planned] == [None, None, None]


async def test_the_same_plan_twice_enqueues_once(redis: ArqRedis, tenants: TenantsConfig) -> None:
    planned = await plan_refreshes(redis, tenants, now=0.0, lookahead=5.0)
    assert await enqueue_refreshes(redis, planned) == 3
    assert await enqueue_refreshes(redis, planned) == 0
    assert len(await redis.queued_jobs()) == 3
