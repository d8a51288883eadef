"""The pending OpenID Connect sign-in against an attacker who writes Redis but holds no secret: a planted,
moved, tampered or malformed record is "this sign-in is not known" (400, logged once, no secret in the line),
never a 500 and never a session.

Real console and provider over HTTP (``tests/console/idp.py``), real Redis.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from services.console import oidc as oidc_module
from services.console.auth import OIDC_BROWSER
from services.console.sessions import COOKIE
from services.console.settings import ConsoleSettings
from tests.console.conftest import Console, serve_console
from tests.console.idp import CLIENT_ID, Idp, callback_url, running_idp, signing_in_with

NOT_KNOWN = "this sign-in is not known"
ATTACKERS_STATE = "state-chosen-by-the-attacker-0123456789"
BROWSER = "b" * 43  # a browser secret as the console makes them (auth._BROWSER_SECRET)


@pytest.fixture
async def oidc_console(
    console_settings: Callable[..., ConsoleSettings], redis: Redis, unused_tcp_port: int
) -> AsyncIterator[tuple[Console, Idp]]:
    async with running_idp() as idp:
        idp.user = {"sub": "1", "email": "boss@example.com", "email_verified": True, "groups": ["conduit-admins"]}
        settings = console_settings(**signing_in_with(idp, unused_tcp_port), console_admin_groups="conduit-admins")
        async with serve_console(settings) as console:
            yield console, idp


def _pending_key(state: str) -> str:
    return f"conduit:console:oidc:{state}"


def _state(callback: str) -> str:
    return parse_qs(urlsplit(callback).query)["state"][0]


def _with_state(callback: str, state: str) -> str:
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return parts._replace(query=urlencode({**query, "state": state})).geturl()


def _browser(console: Console) -> aiohttp.ClientSession:
    """A browser holding the sign-in cookie whose digest a planted record names."""
    jar = aiohttp.CookieJar(unsafe=True)
    return aiohttp.ClientSession(console.url, cookie_jar=jar, cookies={OIDC_BROWSER: BROWSER})


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "pending sign-in does not open" in r.getMessage()]


async def _refused(client: aiohttp.ClientSession, callback: str) -> None:
    """The callback gets the clear refusal, and the browser is signed in as nobody."""
    async with client.get(callback, allow_redirects=False) as answer:
        assert answer.status == 400, (answer.status, await answer.text())
        assert NOT_KNOWN in await answer.text()
        assert COOKIE not in answer.cookies
    async with client.get("/imports", allow_redirects=False) as page:
        assert page.status == 401


async def test_a_well_formed_pending_sign_in_planted_in_redis_steers_nothing(
    oidc_console: tuple[Console, Idp], redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """As the console kept it before sealing: the attacker's own verifier, nonce, page and browser digest."""
    console, idp = oidc_console
    verifier, nonce = "v" * 64, "attackers-nonce"
    planted = {"verifier": verifier, "nonce": nonce, "next": "/tokens",
               "browser": hashlib.sha256(BROWSER.encode()).hexdigest()}  # fmt: skip
    await redis.set(_pending_key(ATTACKERS_STATE), orjson.dumps(planted), ex=600)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    authorize = f"{idp.url}/authorize?" + urlencode({
        "client_id": CLIENT_ID, "redirect_uri": f"{console.url}/login/callback", "state": ATTACKERS_STATE,
        "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256",
    })  # fmt: skip
    async with _browser(console) as client:
        async with client.get(authorize, allow_redirects=False) as at_idp:
            callback = at_idp.headers["Location"]
        await _refused(client, callback)
    assert not idp.token_requests, "a planted record's verifier went to the provider"
    assert len(_refusals(caplog)) == 1
    assert ATTACKERS_STATE not in caplog.text and verifier not in caplog.text


async def test_a_real_pending_sign_in_moved_to_another_state_is_refused_and_logged_once(
    oidc_console: tuple[Console, Idp], redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    console, idp = oidc_console
    async with console.session() as client:
        callback = await callback_url(client, "/login/oidc")
        real = _pending_key(_state(callback))
        await redis.rename(real, _pending_key(ATTACKERS_STATE))
        moved = _with_state(callback, ATTACKERS_STATE)
        await _refused(client, moved)
        await _refused(client, moved)
    assert not idp.token_requests
    assert len(_refusals(caplog)) == 1, "a refused record is deleted, so it is logged once"
    code = parse_qs(urlsplit(callback).query)["code"][0]
    assert ATTACKERS_STATE not in caplog.text and _state(callback) not in caplog.text and code not in caplog.text


@pytest.mark.parametrize("at", [0, 20, -1], ids=["salt", "nonce", "tag"])
async def test_a_tampered_pending_sign_in_is_refused(oidc_console: tuple[Console, Idp], redis: Redis, at: int) -> None:
    console, idp = oidc_console
    async with console.session() as client:
        callback = await callback_url(client, "/login/oidc")
        key = _pending_key(_state(callback))
        sealed = bytearray(await redis.get(key))
        sealed[at] ^= 0x01
        await redis.set(key, bytes(sealed), ex=600)
        await _refused(client, callback)
    assert not idp.token_requests


async def test_garbage_in_a_pending_sign_in_is_refused_not_a_500(
    oidc_console: tuple[Console, Idp], redis: Redis
) -> None:
    console, _ = oidc_console
    async with console.session() as client:
        callback = await callback_url(client, "/login/oidc")
        for garbage in (b"", b"\x00\xff garbage", b"[]", b'"x"', b"{}"):
            await redis.set(_pending_key(_state(callback)), garbage, ex=600)
            await _refused(client, callback)
        # The same steps, untouched, still sign in.
        async with client.get(await callback_url(client, "/login/oidc")) as answer:
            assert answer.status == 200 and "boss@example.com · admin" in await answer.text()


async def test_a_pending_sign_in_kept_past_its_ten_minutes_by_removing_its_ttl_is_refused(
    oidc_console: tuple[Console, Idp], redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    console, idp = oidc_console
    async with console.session() as client:
        callback = await callback_url(client, "/login/oidc")
        await redis.persist(_pending_key(_state(callback)))  # the attacker keeps it for ever
        now = time.time()
        later = SimpleNamespace(time=lambda: now + 601, monotonic=time.monotonic)  # the clock, not a wait
        monkeypatch.setattr(oidc_module, "time", later)
        await _refused(client, callback)
    assert not idp.token_requests


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.binary(max_size=300))
async def test_any_bytes_in_a_pending_sign_in_are_refused(
    oidc_console: tuple[Console, Idp], redis: Redis, record: bytes
) -> None:
    console, idp = oidc_console
    await redis.set(_pending_key(ATTACKERS_STATE), record, ex=600)
    async with _browser(console) as client:
        await _refused(client, f"/login/callback?code=c&state={ATTACKERS_STATE}")
    assert not idp.token_requests
