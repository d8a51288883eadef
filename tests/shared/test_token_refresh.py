"""The token store and single-flight refresher against real Redis and a real token endpoint."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path

import pytest
import structlog
from cryptography.fernet import Fernet
from pydantic import SecretStr
from redis.asyncio import Redis

from shared import redis_keys
from shared.crypto import RecordUnreadable, Sealer
from shared.refresh import RefreshBlocked, Refresher, RefreshFailed, RefreshPolicy
from shared.token_store import TokenRecord, TokenStore
from tests.helpers import load
from tests.scheduler.fault_proxy import fault_proxy
from tests.third_party import ThirdParty, running_third_party


@pytest.fixture
async def party() -> ThirdParty:
    async with running_third_party(lifetime=60) as tp:
        yield tp  # type: ignore[misc]


def make(redis: Redis, key: SecretStr, tmp_path: Path, party: ThirdParty, **kwargs: object) -> Refresher:
    config = load(tmp_path, party, ["acme", "globex"], **kwargs)  # type: ignore[arg-type]
    return Refresher(TokenStore(redis, Sealer(key)), config, RefreshPolicy(request_timeout=1.0, backoff_base=0.01))


async def test_refresh_stores_an_encrypted_record(
    redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    refresher = make(redis, token_key, tmp_path, party)
    record = await refresher.refresh("acme", "demo", trigger="operator")
    assert record is not None and record.access_token is not None
    token = record.access_token.get_secret_value()
    assert party.valid(f"Bearer {token}") == "acme-demo"
    raw = await redis.hget(redis_keys.token("acme", "demo"), "sealed")
    assert raw is not None and token.encode() not in raw
    assert token not in repr(record)
    assert 0.4 * 60 <= record.refresh_due_at - record.issued_at <= 0.5 * 60
    assert record.generation == 1
    assert await redis.zscore(redis_keys.TOKENS_DUE, "acme/demo") == pytest.approx(record.refresh_due_at)


async def test_fresh_token_is_not_refreshed_again(
    redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    refresher = make(redis, token_key, tmp_path, party)
    first = await refresher.refresh("acme", "demo", trigger="scheduled")
    second = await refresher.refresh("acme", "demo", trigger="scheduled")
    assert first is not None and second is not None and second.generation == first.generation
    assert len(party.token_calls) == 1


async def test_old_key_still_reads_after_rotation(redis: Redis, tmp_path: Path, party: ThirdParty) -> None:
    old, new = SecretStr(Fernet.generate_key().decode()), SecretStr(Fernet.generate_key().decode())
    await make(redis, old, tmp_path, party).refresh("acme", "demo", trigger="operator")
    rotated = TokenStore(redis, Sealer(new, old))
    assert (await rotated.get("acme", "demo")) is not None
    with pytest.raises(RecordUnreadable):
        await TokenStore(redis, Sealer(new)).get("acme", "demo")


async def test_refresh_token_rotation_keeps_the_newest(
    redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    refresher = make(redis, token_key, tmp_path, party, grant_type="refresh_token")
    first = await refresher.refresh("acme", "demo", trigger="operator")
    second = await refresher.refresh("acme", "demo", trigger="operator", force=True)
    assert first is not None and second is not None and first.refresh_token and second.refresh_token
    assert first.refresh_token.get_secret_value() != second.refresh_token.get_secret_value()
    assert second.refresh_token.get_secret_value() in party.refresh_tokens
    # A provider that stops rotating: the stored refresh token is kept.
    party.rotate_refresh_tokens = False
    third = await refresher.refresh("acme", "demo", trigger="operator", force=True)
    assert third is not None and third.refresh_token is not None
    assert third.refresh_token.get_secret_value() == second.refresh_token.get_secret_value()
    assert [c.grant_type for c in party.token_calls] == ["refresh_token"] * 3


async def test_concurrent_refreshers_call_the_endpoint_once(
    redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    party.token_delay = 0.2
    refreshers = []
    for i in range(3):
        (tmp_path / str(i)).mkdir()
        refreshers.append(make(redis, token_key, tmp_path / str(i), party))
    results = await asyncio.gather(*(r.refresh("acme", "demo", trigger="on_demand") for r in refreshers * 7))
    assert len(party.token_calls) == 1
    assert {r.generation for r in results if r} == {1}


def _race(redis_url: str, key: str, tenants_file: str, barrier: multiprocessing.synchronize.Barrier, n: int) -> None:
    from shared.tenants import load_tenants

    async def run() -> None:
        redis = Redis.from_url(redis_url)
        refresher = Refresher(TokenStore(redis, Sealer(SecretStr(key))), load_tenants(Path(tenants_file)))
        barrier.wait()
        await asyncio.gather(*(refresher.refresh("acme", "demo", trigger="scheduled") for _ in range(n)))
        await redis.aclose()

    asyncio.run(run())


async def test_twenty_refreshers_in_four_processes_call_once(
    redis: Redis, redis_url: str, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    party.token_delay = 0.3
    make(redis, token_key, tmp_path, party)  # writes the tenants file and registers the clients
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    args = (redis_url, token_key.get_secret_value(), str(tmp_path / "tenants.yaml"), barrier, 5)
    procs = [ctx.Process(target=_race, args=args) for _ in range(4)]
    for p in procs:
        p.start()
    loop = asyncio.get_running_loop()
    for p in procs:
        await loop.run_in_executor(None, p.join, 30)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(party.token_calls) == 1


async def test_stalled_refresher_cannot_overwrite_a_newer_token(redis: Redis, token_key: SecretStr) -> None:
    store = TokenStore(redis, Sealer(token_key))
    stale_fence = await store.next_fence("acme", "demo")
    fresh_fence = await store.next_fence("acme", "demo")
    assert await store.put(TokenRecord("acme", "demo", generation=2, access_token=SecretStr("new")), fresh_fence)
    assert not await store.put(TokenRecord("acme", "demo", generation=1, access_token=SecretStr("old")), stale_fence)
    record = await store.get("acme", "demo")
    assert record is not None and record.access_token is not None
    assert record.access_token.get_secret_value() == "new"


@pytest.mark.parametrize(
    ("mode", "reason", "fragment"),
    [
        ("html", "http_error", "HTTP 502"),
        ("html200", "invalid_response", "not a JSON object"),
        ("empty", "invalid_response", "not a JSON object"),
        ("no_access_token", "invalid_response", "no access_token"),
        ("header_breaking_token", "invalid_response", "not a bearer token"),
        ("server_error", "http_error", "HTTP 503"),
    ],
)
async def test_transient_token_failures_back_off_and_keep_the_old_token(
    redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty, mode: str, reason: str, fragment: str
) -> None:
    refresher = make(redis, token_key, tmp_path, party)
    good = await refresher.refresh("acme", "demo", trigger="operator")
    party.token_mode = mode
    with pytest.raises(RefreshFailed) as err:
        await refresher.refresh("acme", "demo", trigger="operator", force=True)
    assert err.value.error.reason == reason
    assert fragment in str(err.value)
    stored = await refresher.store.get("acme", "demo")
    assert stored is not None and good is not None
    assert stored.access_token == good.access_token  # stale is not expired
    assert stored.error_kind == "transient" and stored.failures == 1 and fragment in (stored.last_error or "")
    assert "secret-acme-demo" not in (stored.last_error or "")


async def test_missing_expires_in_uses_the_provider_default(
    redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    party.token_mode = "no_expires_in"
    with structlog.testing.capture_logs() as logs:
        record = await make(redis, token_key, tmp_path, party).refresh("acme", "demo", trigger="operator")
    assert record is not None
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings and "expires_in" in warnings[0]["event"] and warnings[0]["default_expires_in"] == 120
    assert record.expires_at - record.issued_at == pytest.approx(120)


async def test_permanent_refusal_is_marked_and_not_hammered(
    redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    refresher = make(redis, token_key, tmp_path, party)
    party.token_mode = "invalid_client"
    with pytest.raises(RefreshFailed) as err:
        await refresher.refresh("acme", "demo", trigger="scheduled")
    assert err.value.error.permanent and err.value.error.reason == "invalid_client"
    with pytest.raises(RefreshBlocked):
        await refresher.refresh("acme", "demo", trigger="scheduled")
    assert len(party.token_calls) == 1
    record = await refresher.store.get("acme", "demo")
    assert record is not None and record.error_kind == "permanent"
    assert record.next_attempt_at is not None and record.next_attempt_at > time.time() + 3000
    # An operator's forced refresh still goes through once the provider accepts again.
    party.token_mode = "ok"
    fixed = await refresher.refresh("acme", "demo", trigger="operator", force=True)
    assert fixed is not None and fixed.error_kind is None and fixed.access_token is not None


async def test_token_endpoint_timeout(redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty) -> None:
    party.token_delay = 3
    with pytest.raises(RefreshFailed) as err:
        await make(redis, token_key, tmp_path, party).refresh("acme", "demo", trigger="operator")
    assert err.value.error.reason == "timeout"


async def test_client_secret_post(redis: Redis, token_key: SecretStr, tmp_path: Path, party: ThirdParty) -> None:
    refresher = make(redis, token_key, tmp_path, party, client_auth_method="client_secret_post")
    record = await refresher.refresh("globex", "demo", trigger="operator")
    assert record is not None and party.token_calls[0].client_id == "globex-demo"


async def test_redis_away_while_a_rotated_token_is_stored_keeps_the_grant(
    redis: Redis, redis_url: str, token_key: SecretStr, tmp_path: Path, party: ThirdParty
) -> None:
    """The provider has spent the old refresh token: the new one is stored once Redis is back (4 s here)."""
    async with fault_proxy(redis_url) as proxy:
        proxied = Redis.from_url(proxy.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            refresher = make(proxied, token_key, tmp_path, party, grant_type="refresh_token")
            party.token_delay = 0.5
            refreshing = asyncio.create_task(refresher.refresh("acme", "demo", trigger="scheduled"))
            while not party.token_calls:  # the token request is on its way
                await asyncio.sleep(0.01)
            proxy.set("down")
            await asyncio.sleep(4.0)  # the outage itself, longer than the old retries lasted
            proxy.set("up")
            record = await asyncio.wait_for(refreshing, 30)
        finally:
            await proxied.aclose()
    assert record is not None and record.generation == 1
    party.token_delay = 0
    # The rotated refresh token was kept, and the lock released: the next refresh works at once.
    again = await make(redis, token_key, tmp_path, party, grant_type="refresh_token").refresh(
        "acme", "demo", trigger="operator", force=True
    )
    assert again is not None and again.generation == 2
    assert [c.refresh_token for c in party.token_calls][1] == record.refresh_token.get_secret_value()
