"""The proxy when Redis is down at start, and when Redis restarts under it (a private redis-server)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.private_redis import PrivateRedis
from tests.proxy.conftest import Proxy
from tests.third_party import ThirdParty


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll a condition until it holds; the deadline only bounds a failing test."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"


async def _ready(proxy: Proxy) -> bool:
    return (await proxy.get("/ready", tenant=None)).status == 200


async def test_redis_down_at_start_then_up(
    start_proxy: Callable[..., Any], party: ThirdParty, private_redis: PrivateRedis
) -> None:
    async with start_proxy(party, redis_url=private_redis.url) as proxy:
        ready = await proxy.get("/ready", tenant=None)
        body = await ready.json()
        assert ready.status == 503 and body["checks"]["redis"].startswith("unreachable")
        failed = await proxy.get("/x")
        assert failed.status == 503 and (await failed.json())["error"] == "no_token"
        assert party.api_calls == []
        private_redis.start()
        await eventually(lambda: _ready(proxy))
        assert (await proxy.get("/x")).status == 200


async def test_redis_restart_keeps_serving_with_the_in_memory_token(
    start_proxy: Callable[..., Any], party: ThirdParty, private_redis: PrivateRedis
) -> None:
    private_redis.start()
    async with start_proxy(party, redis_url=private_redis.url) as proxy:
        await eventually(lambda: _ready(proxy))
        assert (await proxy.get("/x")).status == 200
        private_redis.stop()
        for _ in range(20):
            assert (await proxy.get("/x")).status == 200
        assert (await proxy.get("/ready", tenant=None)).status == 503
        private_redis.start()
        await eventually(lambda: _ready(proxy))
        assert (await proxy.get("/x")).status == 200
        assert len(party.token_calls) == 1
