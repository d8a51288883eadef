"""Sessions against an attacker who writes Redis but holds no secret: a forged, moved, tampered or
everlasting session record signs nobody in, and each refused record is logged once, without secrets.

Real console over HTTP and real Redis; the tampering is generated, against the session store itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from services.console import sessions as sessions_module
from services.console.sessions import COOKIE, Sessions, _key
from services.console.settings import ConsoleSettings
from shared.crypto import BoundSealer, new_key
from tests.console.conftest import Console

ATTACKERS_ID = "chosen-by-the-attacker-0123456789"


async def _signed_in_as(console: Console, session_id: str) -> bool:
    """Whether a browser holding this cookie gets a page (an admin's page for an admin)."""
    async with aiohttp.ClientSession(console.url, cookies={COOKIE: session_id}) as client:
        async with client.get("/imports", allow_redirects=False) as answer:
            assert answer.status in (200, 401), answer.status
            return answer.status == 200


async def _session_keys(redis: Redis) -> list[bytes]:
    return [key async for key in redis.scan_iter(match="conduit:console:session:*")]


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "console session refused" in r.getMessage()]


async def test_a_session_forged_in_redis_signs_nobody_in(
    console: Console, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # As the console stored sessions before they were sealed, and sealed under a key that is not the console's.
    plain = orjson.dumps({"name": "mallory", "role": "admin", "csrf": "c" * 43, "via": "token"})
    other = BoundSealer("console session", SecretStr(new_key()))
    key = _key(ATTACKERS_ID)
    for record in (plain, other.seal(plain, key.encode())):
        await redis.set(key, record, ex=3600)
        assert not await _signed_in_as(console, ATTACKERS_ID)
    assert len(_refusals(caplog)) == 2
    assert ATTACKERS_ID not in caplog.text and key not in caplog.text


async def test_a_real_session_moved_to_another_key_signs_nobody_in_and_is_logged_once(
    console: Console, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = await console.signed_in()
    async with client:
        (real,) = await _session_keys(redis)
        await redis.set(_key(ATTACKERS_ID), await redis.get(real), ex=3600)
        assert not await _signed_in_as(console, ATTACKERS_ID)
        assert not await _signed_in_as(console, ATTACKERS_ID)
        assert len(_refusals(caplog)) == 1, "a refused record is deleted, so it is logged once"
        async with client.get("/imports", allow_redirects=False) as answer:
            assert answer.status == 200, "the real session, where it belongs, still works"


async def test_a_session_kept_past_its_lifetime_by_removing_its_ttl_is_signed_out(
    console: Console, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = Sessions(redis, 60, BoundSealer("console session", console.settings.token_key))
    session_id, _ = await sessions.create("reader", "readonly", "token")
    await redis.persist(_key(session_id))  # the attacker keeps it for ever
    assert await _signed_in_as(console, session_id)
    now = time.time()
    monkeypatch.setattr(sessions_module, "time", SimpleNamespace(time=lambda: now + 61))  # the clock, not a wait
    assert not await _signed_in_as(console, session_id)
    assert await redis.exists(_key(session_id)) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_any_change_to_a_sealed_session_signs_it_out(redis: Redis, data: st.DataObject) -> None:
    sessions = Sessions(redis, 3600, BoundSealer("console session", SecretStr(new_key())))
    session_id, user = await sessions.create("reader", "readonly", "token")
    key = _key(session_id)
    sealed = bytearray(await redis.get(key))
    how = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if how == "flip":
        at = data.draw(st.integers(0, 4095)) % len(sealed)  # the record's length varies with its expiry
        sealed[at] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        sealed = sealed[: data.draw(st.integers(0, 4095)) % len(sealed)]
    else:
        sealed += data.draw(st.binary(min_size=1, max_size=16))
    assert await sessions.get(session_id) == user
    await redis.set(key, bytes(sealed))
    assert await sessions.get(session_id) is None
    assert await redis.exists(key) == 0


def test_the_console_refuses_to_start_without_a_key_to_seal_sessions(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("CONDUIT_TOKEN_KEY", raising=False)
    with pytest.raises(ValidationError, match="the console needs CONDUIT_TOKEN_KEY") as refused:
        ConsoleSettings(console_token=SecretStr("x" * 16), token_key=None)
    assert "x" * 16 not in str(refused.value)
