"""The response cache against someone who can write Redis but holds no key: nothing they move or write is served.

The cache's keys hold the tenant and provider, but Redis does not keep keys and
values together: a red team's entry copied from globex's key to acme's would have
acme's callers served globex's data. Every case here works on the stored bytes
without reading them (Redis ``DUMP``/``RESTORE`` moves an entry whatever its
format), then asks through the proxy over HTTP and requires the answer the
upstream gives to that very request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from services.auth_proxy.metrics import CACHE
from tests.proxy.conftest import Proxy
from tests.proxy.test_proxy_cache_generated import STORED, Call, Upstreams, _a, _send, upstreams
from tests.third_party import ThirdParty, echo_of

__all__ = ["upstreams"]  # a fixture of test_proxy_cache_generated, used here too

ROUTES = [{"prefix": "/cached", "ttl": 30}]


@pytest.fixture
async def cached(start_proxy: Callable[..., Any], party: ThirdParty) -> AsyncIterator[Proxy]:
    async with start_proxy(party, proxy_cache_enabled=True, proxy_cache_routes=ROUTES) as proxy:
        yield proxy


async def _answer(proxy: Proxy, tenant: str) -> dict[str, Any]:
    response = await proxy.get("/cached", tenant=tenant)
    assert response.status == 200
    answer: dict[str, Any] = await response.json()
    return answer


async def _only_key(redis: Redis, tenant: str) -> bytes:
    keys = await redis.keys(f"conduit:cache:{tenant}:*")
    assert len(keys) == 1, keys
    key: bytes = keys[0]
    return key


async def _move(redis: Redis, source: bytes, target: bytes) -> None:
    """What an intruder does: the stored bytes under another key, unread, with a long life."""
    await redis.restore(target, 0, await redis.dump(source), replace=True)


def _refused(tenant: str) -> float:
    return CACHE.labels(tenant, "demo", "refused")._value.get()


async def test_an_entry_moved_to_another_tenants_key_is_not_served(cached: Proxy, redis: Redis) -> None:
    await _answer(cached, "globex")
    await _answer(cached, "acme")
    await _move(redis, await _only_key(redis, "globex"), await _only_key(redis, "acme"))
    refused = _refused("acme")

    calls = len(cached.party.api_calls)
    answer = await _answer(cached, "acme")
    assert answer["client"] == "acme-demo"
    assert len(cached.party.api_calls) == calls + 1  # the moved entry was a miss, not an answer
    assert _refused("acme") == refused + 1
    # The fresh answer replaced it: served from the cache now, still acme's.
    assert await _answer(cached, "acme") == answer
    assert len(cached.party.api_calls) == calls + 1


async def test_a_refused_entry_is_logged_once_without_its_content(
    upstreams: Upstreams, redis: Redis, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Once even where the fresh answer is not stored in its place (the upstream now says no-store)."""
    proxy = upstreams.proxy
    proxy.party.cache_profiles["/echo-cache/a"] = [STORED]
    for tenant in ("globex", "acme"):
        assert (await proxy.get("/echo-cache/a", tenant=tenant)).status == 200
    acme_key = await _only_key(redis, "acme")
    await _move(redis, await _only_key(redis, "globex"), acme_key)
    proxy.party.cache_profiles["/echo-cache/a"] = [("Cache-Control", "no-store")]
    capsys.readouterr()
    calls = len(proxy.party.api_calls)
    for _ in range(2):
        assert (await (await proxy.get("/echo-cache/a")).json())["client"] == "acme-demo"
    assert len(proxy.party.api_calls) == calls + 2
    logged = capsys.readouterr().err + "\n".join(str(r.msg) for r in caplog.records)
    refusals = [line for line in logged.splitlines() if "response cache entry refused" in line]
    assert len(refusals) == 1, logged
    assert "globex" not in refusals[0] and acme_key.decode().rsplit(":", 1)[1] not in refusals[0]


@pytest.mark.parametrize("where", [0, 5, 20, 40, -17, -1])
async def test_a_tampered_entry_is_not_served(cached: Proxy, redis: Redis, where: int) -> None:
    """A byte flipped in every stored field, at the front, in the middle or near the end (the body's tail)."""
    first = await _answer(cached, "acme")
    key = await _only_key(redis, "acme")
    fields: dict[bytes, bytes] = await redis.hgetall(key)  # type: ignore[misc]
    for name, value in fields.items():
        spoiled = bytearray(value)
        spoiled[where % len(value)] ^= 0x01
        await redis.hset(key, name, bytes(spoiled))  # type: ignore[misc]

    calls = len(cached.party.api_calls)
    answer = await _answer(cached, "acme")
    assert len(cached.party.api_calls) == calls + 1
    assert answer == {"client": "acme-demo", "n": calls + 1} and answer != first


async def test_an_entry_stored_before_sealing_is_a_miss_and_replaced(cached: Proxy, redis: Redis) -> None:
    """The fields the unsealed cache wrote (``meta`` JSON and ``body``), as an intruder could write them too."""
    await _answer(cached, "acme")
    key = await _only_key(redis, "acme")
    meta = {"status": 200, "headers": [["Content-Type", "application/json"]], "stored_at": 0}
    await redis.delete(key)
    await redis.hset(key, mapping={"meta": orjson.dumps(meta), "body": b'{"client": "globex-demo", "n": 0}'})  # type: ignore[misc]

    calls = len(cached.party.api_calls)
    answer = await _answer(cached, "acme")
    assert answer == {"client": "acme-demo", "n": calls + 1}
    assert not {b"meta", b"body"} & set(await redis.hkeys(key))  # type: ignore[misc]
    assert await _answer(cached, "acme") == answer  # and the new entry serves


# Generated: requests over two tenants, two providers and a few targets, each stored, while an intruder moves
# stored entries onto other keys in between. Every answer must echo its own request (tenant, provider, target,
# Accept), whether it came from the upstream or from the cache.

TARGETS = ["/echo-cache/a", "/echo-cache/a?q=1", "/echo-cache/b"]
ACCEPTS = [(), ("application/json",)]
Send = tuple[str, str, str, tuple[str, ...]]
Move = tuple[int, int]


def _call(send: Send) -> Call:
    tenant, provider, target, accept = send
    return _a(tenant=tenant, provider=provider, path=target.split("?")[0], target=target, accept=accept)


sends = st.tuples(
    st.sampled_from(["acme", "globex"]),
    st.sampled_from(["demo", "other"]),
    st.sampled_from(TARGETS),
    st.sampled_from(ACCEPTS),
)
moves = st.tuples(st.integers(0, 31), st.integers(0, 31))


@settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(st.one_of(sends, moves), min_size=2, max_size=12))
# The red team's move: globex's entry onto acme's key (keys sorted: acme's first).
@example(
    steps=[
        ("globex", "demo", TARGETS[0], ()),
        ("acme", "demo", TARGETS[0], ()),
        (1, 0),
        ("acme", "demo", TARGETS[0], ()),
    ]
)
# One tenant's entry at one provider onto its key at another.
@example(
    steps=[
        ("acme", "other", TARGETS[1], ()),
        ("acme", "demo", TARGETS[1], ()),
        (0, 1),
        ("acme", "other", TARGETS[1], ()),
    ]
)
async def test_a_served_answer_always_came_from_its_own_key(
    upstreams: Upstreams, redis: Redis, steps: list[Send | Move]
) -> None:
    for key in await redis.keys("conduit:cache:*"):
        await redis.delete(key)
    for party in (upstreams.proxy.party, upstreams.other):
        party.cache_profiles.clear()
        party.cache_profiles.update({"/echo-cache/a": [STORED], "/echo-cache/b": [STORED]})
    for step in steps:
        if isinstance(step[0], int):
            keys = sorted(await redis.keys("conduit:cache:*"))
            source, target = step
            if len(keys) > 1 and keys[source % len(keys)] != keys[target % len(keys)]:
                await _move(redis, keys[source % len(keys)], keys[target % len(keys)])
            continue
        call = _call(step)  # type: ignore[arg-type]
        status, answer, _ = await _send(upstreams, call)
        answer.pop("nonce")
        expected = echo_of(f"{call.tenant}-{call.provider}", "GET", "/api" + call.target, b"", call.headers(), [STORED])
        assert (status, answer) == (200, expected), "served an answer stored for another key"


async def test_an_answer_cached_from_another_api_base_url_is_not_served(
    start_proxy: Callable[..., Any], party: ThirdParty
) -> None:
    """An operator moves a provider's api_base_url (a new API version, another region): what the old base
    answered is not served for the new one, however long its TTL."""
    async with start_proxy(party, proxy_cache_enabled=True, proxy_cache_routes=ROUTES) as proxy:
        await _answer(proxy, "acme")
    calls = len(party.api_calls)
    moved = party.api_url.rstrip("/") + "/v2/"
    async with start_proxy(party, api_base_url=moved, proxy_cache_enabled=True, proxy_cache_routes=ROUTES) as proxy:
        await proxy.get("/cached", tenant="acme")
    assert len(party.api_calls) == calls + 1, "answered from the old base's cache"
    assert party.api_calls[-1].path_qs.endswith("/v2/cached")
