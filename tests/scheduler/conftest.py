"""Scheduler fixtures: tenants files with schedules, an arq client on the test Redis, schedulers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from arq.connections import ArqRedis
from redis.asyncio import Redis

from services.scheduler.main import Scheduler
from services.scheduler.settings import SchedulerSettings
from shared.job_json import JsonArqRedis
from shared.tenants import TenantsConfig, load_tenants
from tests.scheduler.support import MODULES, tenants_yaml


@pytest.fixture
def write_tenants(tmp_path: Path) -> Callable[..., TenantsConfig]:
    def write(tenants: dict[str, dict[str, Any] | None], imports: dict[str, Any] | None = None) -> TenantsConfig:
        path = tmp_path / "tenants.yaml"
        path.write_text(yaml.safe_dump(tenants_yaml(tenants, imports)))
        return load_tenants(path, resolve_secrets=False)

    return write


@pytest.fixture
async def arq_redis(redis: Redis, redis_url: str) -> AsyncIterator[ArqRedis]:
    """arq's client on the test database (flushed by the ``redis`` fixture)."""
    client = JsonArqRedis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def make_scheduler(redis_url: str, arq_redis: ArqRedis) -> Callable[..., Scheduler]:
    def make(tenants: TenantsConfig, modules: list[str] | None = None, redis: Any = None, **settings: Any) -> Scheduler:
        config = SchedulerSettings(redis_url=redis_url, tenants_file=tenants.path, **settings)
        return Scheduler(config, tenants, redis or arq_redis, MODULES if modules is None else modules)

    return make
