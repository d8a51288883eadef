"""The proxy's in-process token copy: no stampede on Redis or the token endpoint."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from services.auth_proxy.token_cache import TokenCache, listen_for_changes
from shared import redis_keys
from shared.crypto import Sealer
from shared.redis_client import create_redis
from shared.refresh import Refresher
from shared.token_store import TokenRecord, TokenStore
from tests.helpers import load
from tests.third_party import ThirdParty


class CountingStore(TokenStore):
    reads = 0

    async def get(self, tenant: str, provider: str) -> TokenRecord | None:
        self.reads += 1
        return await super().get(tenant, provider)


def cache_for(redis: Redis, key: SecretStr, tmp_path: Path, party: ThirdParty) -> tuple[TokenCache, CountingStore]:
    store = CountingStore(redis, Sealer(key))
    return TokenCache(store, Refresher(store, load(tmp_path, party, ["acme"]))), store


async def test_ageing_token_is_reloaded_once_in_the_background(
    redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    cache, store = cache_for(redis, token_key, tmp_path, party)
    now = time.time()
    # 80% through a 100 s life: past the background reload point, far from expiry.
    aged = TokenRecord("acme", "demo", 1, SecretStr("aged"), None, "Bearer", now - 80, now + 20, now - 30)
    assert await store.put(aged, await store.next_fence("acme", "demo"))
    first = await cache.get("acme", "demo")
    store.reads = 0
    results = await asyncio.gather(*(cache.get("acme", "demo") for _ in range(200)))
    # Every caller got the current token at once; one background task went to the store
    # (its load, then the refresher's read and re-read under the lock), not one per caller.
    assert {r.generation for r in results} == {first.generation}
    await asyncio.gather(*list(cache._background.values()))
    assert store.reads == 3
    # ... and, the store holding nothing newer and the token being past due, refreshed it once.
    assert len(party.token_calls) == 1
    assert (await cache.get("acme", "demo")).generation == 2


async def test_no_token_means_one_shared_refresh(
    redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    party.token_delay = 0.2
    cache, store = cache_for(redis, token_key, tmp_path, party)
    results = await asyncio.gather(*(cache.get("acme", "demo") for _ in range(200)))
    assert {r.generation for r in results} == {1}
    assert len(party.token_calls) == 1
    assert store.reads == 3  # the shared load, the refresher's read and its re-read under the lock


async def test_the_change_feed_survives_a_quiet_channel(
    redis_url: str, redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    # A client whose socket timeout is far shorter than the quiet period below.
    client = create_redis(redis_url, timeout=0.2)
    store = TokenStore(client, Sealer(token_key))
    cache = TokenCache(store, Refresher(store, load(tmp_path, party, ["acme"])))
    first = await cache.get("acme", "demo")
    states: list[bool] = []
    connected = asyncio.Event()

    def on_state(up: bool) -> None:
        states.append(up)
        connected.set()

    feed = asyncio.create_task(listen_for_changes(cache, store, on_state))
    try:
        await asyncio.wait_for(connected.wait(), 5)
        # Quiet for five socket timeouts: the feed must stay up (it used to drop and reconnect).
        await asyncio.sleep(1.0)
        assert states == [True]
        newer = await cache._refresher.refresh("acme", "demo", trigger="operator", force=True)
        assert newer is not None and newer.generation == first.generation + 1
        deadline = time.monotonic() + 2
        while (await cache.get("acme", "demo")).generation != newer.generation:
            assert time.monotonic() < deadline, "the feed did not deliver the change"
            await asyncio.sleep(0.01)
    finally:
        feed.cancel()
        await client.aclose()


async def test_the_change_feed_stops_when_cancelled_at_any_point(
    redis_url: str, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    # redis-py's get_message can swallow a cancellation (its zero-timeout readiness check turns it
    # into a TimeoutError); the feed then ran on and a proxy that failed to listen never exited.
    client = create_redis(redis_url, 2.0)  # as the proxy makes it
    store = TokenStore(client, Sealer(token_key))
    cache = TokenCache(store, Refresher(store, load(tmp_path, party, ["acme"])))
    for step in range(40):
        feed = asyncio.create_task(listen_for_changes(cache, store, lambda up: None))
        await asyncio.sleep(step / 2000)  # let it get that far: connecting, subscribing, reading
        feed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(feed, 5)
    await client.aclose()


@pytest.mark.parametrize("message", [b"", b"acme", b"acme/demo/x", b"acme/demo/", b"\xff/demo/1", b"acme/demo/1e3"])
async def test_the_change_feed_survives_a_message_it_cannot_read(
    redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty, message: bytes
) -> None:
    """Anyone who can publish on Redis can send anything on the channel: the feed skips it and goes on."""
    cache, store = cache_for(redis, token_key, tmp_path, party)
    first = await cache.get("acme", "demo")
    connected = asyncio.Event()
    feed = asyncio.create_task(listen_for_changes(cache, store, lambda up: connected.set()))
    try:
        await asyncio.wait_for(connected.wait(), 5)
        await redis.publish(redis_keys.tokens_changed(redis), message)
        newer = await cache._refresher.refresh("acme", "demo", trigger="operator", force=True)
        assert newer is not None and newer.generation == first.generation + 1
        deadline = time.monotonic() + 2
        while (await cache.get("acme", "demo")).generation != newer.generation:
            assert not feed.done(), "the feed ended"
            assert time.monotonic() < deadline, "the feed did not deliver the change after the bad message"
            await asyncio.sleep(0.01)
    finally:
        feed.cancel()
