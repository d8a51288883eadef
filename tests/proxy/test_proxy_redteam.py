"""The tenant boundary and the token against an attacker inside the cluster, beyond the strict-head tests.

A caller of one tenant must never get the token the proxy holds for it, however
the provider echoes it back; and nothing written to Redis by someone without the
token key may make one tenant's requests carry another tenant's token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from redis.asyncio import Redis

from shared import redis_keys
from shared.crypto import RecordUnreadable, Sealer
from shared.token_store import TokenRecord, TokenStore
from tests.proxy.conftest import Proxy
from tests.third_party import ECHOES, ThirdParty, running_third_party


@pytest.fixture
async def base64_party() -> AsyncIterator[ThirdParty]:
    """Tokens with '+', '/' and '=' in them, which URL-encoding and JSON spell otherwise."""
    async with running_third_party(lifetime=60, token_suffix="+/9=") as tp:
        yield tp


@pytest.fixture
async def echoing(start_proxy: Callable[..., Any], base64_party: ThirdParty) -> AsyncIterator[Proxy]:
    routes = [{"prefix": "/echo-token/sized/", "ttl": 30}]
    async with start_proxy(base64_party, proxy_cache_enabled=True, proxy_cache_routes=routes) as proxy:
        yield proxy


def _spellings(token: str) -> set[str]:
    return {ECHOES[how]("Bearer " + token).removeprefix(ECHOES[how]("Bearer ")) for how in ECHOES}


@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    framing=st.sampled_from(["sized", "chunked", "large"]),
    spelling=st.sampled_from(sorted(ECHOES)),
    status=st.sampled_from(["200", "400", "401", "403", "500"]),
    tenant=st.sampled_from(["acme", "globex"]),
)
async def test_a_provider_echoing_the_token_never_hands_it_to_the_caller(
    echoing: Proxy, framing: str, spelling: str, status: str, tenant: str
) -> None:
    # Twice: the second answer of a sized 200 comes from the cache, which must not hold the token either.
    for _ in range(2):
        response = await echoing.get(f"/echo-token/{framing}/{spelling}/{status}", tenant=tenant)
        body = await response.read()
        seen = "\n".join(f"{k}: {v}" for k, v in response.headers.items()) + "\n" + body.decode()
        assert response.status == int(status)
        assert response.headers["X-Debug-Authorization"].startswith(ECHOES[spelling]("Bearer "))
        assert orjson.loads(body)["got"].startswith(ECHOES[spelling]("Bearer "))  # still JSON, masked in place
        for token in echoing.party.tokens:
            for form in _spellings(token):
                assert form not in seen, f"the caller got a token, spelled {spelling}"


@pytest.mark.parametrize("moved_to", [("globex", "demo"), ("acme", "billing")])
async def test_a_token_record_moved_to_another_pairs_key_is_never_used(
    start_proxy: Callable[..., Any], party: ThirdParty, redis: Redis, moved_to: tuple[str, str]
) -> None:
    """Someone who can write Redis but has no token key copies acme's sealed record under another pair's key."""
    async with running_third_party(lifetime=60) as billing, start_proxy(party, extra={"billing": billing}) as proxy:
        answer = await proxy.get("/x", headers={"X-Provider": "demo"})
        assert (await answer.json())["client"] == "acme-demo"
        sealed = await redis.hget(redis_keys.token("acme", "demo"), "sealed")
        await redis.hset(redis_keys.token(*moved_to), "sealed", sealed)

        tenant, provider = moved_to
        response = await proxy.get("/x", tenant=tenant, headers={"X-Provider": provider})
        body = await response.json()
        assert response.status == 503, body
        assert body["error"] == "no_token"
        assert "sealed for acme/demo" in body["message"]
        assert [c.tenant_client for c in party.api_calls + billing.api_calls] == ["acme-demo"]


@pytest.mark.parametrize("path", ["/x", "/status/404", "/cached", "/echo-cache/varied"])
async def test_every_answer_tells_http_caches_it_depends_on_the_tenant(
    start_proxy: Callable[..., Any], party: ThirdParty, path: str
) -> None:
    """A cache between the callers and the proxy keys on the URL and the headers Vary names (RFC 9111 §4.1):
    without X-Tenant-ID there, the next tenant asking for the path would get this tenant's answer."""
    party.cache_profiles["/echo-cache/varied"] = [("Vary", "Accept-Language"), ("Cache-Control", "max-age=60")]
    routes = [{"prefix": "/cached", "ttl": 30}]
    async with start_proxy(party, proxy_cache_enabled=True, proxy_cache_routes=routes) as proxy:
        for tenant in ("acme", "acme", "globex"):  # the second acme answer of /cached is a cache hit
            answer = await proxy.get(path, tenant=tenant)
            varied = {v.strip().lower() for line in answer.headers.getall("Vary", ()) for v in line.split(",")}
            assert {"x-tenant-id", "x-provider"} <= varied, (path, answer.headers.getall("Vary", ()))
            if path == "/echo-cache/varied":
                assert "accept-language" in varied  # the upstream's own Vary is kept


async def test_a_session_the_provider_opens_for_the_token_never_reaches_the_caller(proxy: Proxy) -> None:
    """A provider that answers a bearer request with a session cookie hands out a credential as good as the
    token, usable without the proxy; through the proxy it is useless (the caller's Cookie never goes up)."""
    cookies = [("Set-Cookie", "sid=s3ss10n; HttpOnly"), ("Set-Cookie2", "a=1")]
    proxy.party.cache_profiles["/echo-cache/session"] = cookies
    answer = await proxy.get("/echo-cache/session")
    assert answer.status == 200
    assert "Set-Cookie" not in answer.headers and "Set-Cookie2" not in answer.headers
    assert "s3ss10n" not in str(answer.raw_headers)


@st.composite
def underscored(draw: st.DrawFn) -> tuple[str, str]:
    """A routing header's name with at least one '-' spelled '_', in any case, and the code refusing it."""
    name, code = draw(st.sampled_from(list(AMBIGUOUS.items())))
    parts = name.split("-")
    seps = draw(
        st.lists(st.sampled_from("-_"), min_size=len(parts) - 1, max_size=len(parts) - 1).filter(lambda s: "_" in s)
    )
    spelled = parts[0] + "".join(sep + part for sep, part in zip(seps, parts[1:], strict=True))
    return draw(st.sampled_from([spelled, spelled.lower(), spelled.upper()])), code


AMBIGUOUS = {
    "X-Tenant-ID": "ambiguous_tenant",
    "X-Provider": "ambiguous_provider",
    "X-Request-ID": "ambiguous_request_id",
}


@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(spelling=underscored(), value=st.sampled_from(["globex", "demo", "r-1"]))
async def test_a_routing_header_spelled_with_underscores_is_refused(
    proxy: Proxy, spelling: tuple[str, str], value: str
) -> None:
    """CGI, WSGI, PHP and Rack read X_Tenant_ID as X-Tenant-ID: forwarded, it would tell the provider
    another tenant than the one whose token goes with it."""
    name, code = spelling
    proxy.party.api_calls.clear()
    answer = await proxy.get("/x", headers={name: value})
    assert (answer.status, (await answer.json())["error"]) == (400, code)
    assert not proxy.party.api_calls


async def test_a_path_that_always_answers_401_cannot_make_the_proxy_churn_the_tenants_token(proxy: Proxy) -> None:
    """A 401 that a new token does not cure (a scope the client lacks, a path that is always 401) must not
    cost a token request per call: that hammers the token endpoint, whose rate limits then refuse the
    tenant's real refreshes, and spends a rotating refresh token on every call."""
    await proxy.get("/x")
    for _ in range(8):
        answer = await proxy.get("/status/401")
        assert answer.status == 401
    # The first 401 is worth one refresh (the token may have been revoked); the retry's 401 says it was not.
    assert len(proxy.party.token_calls) == 2
    assert (await proxy.get("/x")).status == 200
    assert len(proxy.party.token_calls) == 2


async def test_listing_every_token_record_refuses_one_moved_to_another_pairs_key(
    redis: Redis, token_key: SecretStr
) -> None:
    """``TokenStore.all`` read records without the pair check ``get`` makes: a moved one was listed as its own."""
    store = TokenStore(redis, Sealer(token_key))
    await store.put(TokenRecord("acme", "demo", access_token=SecretStr("a")), await store.next_fence("acme", "demo"))
    assert [(r.tenant, r.provider) async for r in store.all()] == [("acme", "demo")]
    sealed = await redis.hget(redis_keys.token("acme", "demo"), "sealed")  # type: ignore[misc]
    await redis.hset(redis_keys.token("globex", "demo"), "sealed", sealed)  # type: ignore[misc]
    with pytest.raises(RecordUnreadable, match="stored for globex/demo is sealed for acme/demo"):
        [r async for r in store.all()]
