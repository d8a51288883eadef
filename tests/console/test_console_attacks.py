"""The console against its own users' browsers: only an admin's POST with its CSRF token acts, every
response carries the security headers, a signed-out browser's live stream ends, and signing in never
sends the browser off the console.

The action routes are read from the app's router, so a new action is covered (or the test
asks for its parameters) without anyone remembering to add it here.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from services.console.auth import _next
from services.console.settings import ConsoleSettings
from shared import events, pauses
from tests.console.conftest import READONLY_TOKEN, Console, serve_console
from tests.console.idp import callback_url, running_idp, signing_in_with
from tests.console.test_console_http import add_run
from tests.importer.conftest import Database

JOB = "import:acme:users:2024-05-01"
# The fields each action route needs to do something; a route missing here fails the test.
FIELDS = {
    "/runs/{run_id}/rerun": {},
    "/imports/rerun-failed": {"tenant": "acme"},
    "/jobs/cancel": {"job_id": JOB},
    "/schedules/pause": {"tenant": "acme", "module": "orders"},
    "/schedules/resume": {"tenant": "acme", "module": "users"},
    "/tokens/refresh": {"tenant": "acme", "provider": "demo"},
}
# (method, who, which CSRF token): every way of asking but the one that may act.
ATTEMPTS = [
    *itertools.product(["GET", "HEAD"], ["admin"], ["none"]),
    *itertools.product(["POST", "PUT", "DELETE", "PATCH"], ["admin"], ["none", "wrong", "wrong-header"]),
    ("POST", "readonly", "right"),
    ("POST", "anonymous", "none"),
]


def action_routes(console: Console) -> list[str]:
    return sorted(
        {
            route.resource.canonical
            for route in console.app.router.routes()
            if route.resource is not None and route.handler.__module__ == "services.console.actions"
        }
    )


async def _state(redis: Redis, db: Database) -> tuple[Any, ...]:
    keys = sorted(k for k in await redis.keys("*") if not k.startswith(b"conduit:console:session:"))
    dumps = [(k, await redis.dump(k)) for k in keys]
    runs = await db.value("SELECT count(*) FROM import_runs")
    audit = await db.value("SELECT count(*) FROM console_audit")
    return dumps, runs, audit


async def _setup(redis: Redis, db: Database) -> int:
    await pauses.pause(redis, "acme", "users")
    await redis.zadd("arq:queue", {JOB: 1_000})
    await redis.set(f"arq:job:{JOB}", b"queued")
    return await add_run(db)


async def _ask(
    console: Console, method: str, who: str, token: str, path: str, fields: dict[str, str]
) -> aiohttp.ClientResponse:
    client, csrf = await console.signed_in(READONLY_TOKEN if who == "readonly" else "console-admin-token-9f3b")
    if who == "anonymous":
        await client.close()
        client, csrf = console.session(), "nothing"
    sent = {"right": csrf, "wrong": csrf[:-2] + "xx", "none": None, "wrong-header": None}[token]
    headers = {"X-CSRF-Token": csrf[::-1]} if token == "wrong-header" else {}
    data = {**fields, **({"csrf": sent} if sent else {})}
    async with client:
        if method in ("GET", "HEAD"):
            return await client.request(method, path, params=fields, allow_redirects=False)
        return await client.request(method, path, data=data, headers=headers, allow_redirects=False)


async def test_only_an_admins_post_with_its_csrf_token_acts(console: Console, redis: Redis, db: Database) -> None:
    run_id = await _setup(redis, db)
    routes = action_routes(console)
    assert set(routes) == set(FIELDS), "an action route without its fields here"
    for route, (method, who, token) in itertools.product(routes, ATTEMPTS):
        before = await _state(redis, db)
        answer = await _ask(console, method, who, token, route.format(run_id=run_id), FIELDS[route])
        assert await _state(redis, db) == before, f"{method} {route} by {who} with {token} CSRF token acted"
        assert answer.status in (200, 303, 401, 403, 405), (method, route, answer.status)
    # The one way that acts does act, on every route: the state above can tell.
    for route in routes:
        before = await _state(redis, db)
        answer = await _ask(console, "POST", "admin", "right", route.format(run_id=run_id), FIELDS[route])
        assert answer.status == 200, route
        assert await _state(redis, db) != before, route


@pytest.mark.parametrize(
    "path", ["/", "/board/stream", "/runs/{run_id}/rejects.csv", "/static/console.css", "/no-such-page"]
)
async def test_every_response_streamed_or_not_has_the_security_headers(
    console: Console, db: Database, path: str
) -> None:
    run_id = await add_run(db)
    client, _ = await console.signed_in()
    async with client, client.get(path.format(run_id=run_id)) as answer:
        assert answer.status in (200, 404), path
        assert "script-src 'self'" in answer.headers.get("Content-Security-Policy", ""), path
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", path
        assert answer.headers.get("Cache-Control") == "no-store", path


async def _frames(stream: aiohttp.ClientResponse) -> list[str]:
    """Every board frame until the server ends the stream."""
    frames, lines = [], []
    while line := (await stream.content.readline()).decode():
        if line == "\n" and lines:
            frames.append("\n".join(lines))
            lines = []
        elif line.startswith("data: "):
            lines.append(line[6:])
    return frames


async def test_a_signed_out_browser_gets_nothing_more_from_the_live_stream(console: Console, redis: Redis) -> None:
    client, csrf = await console.signed_in()
    other, _ = await console.signed_in()
    timeout = aiohttp.ClientTimeout(total=20)
    async with client, other, client.get("/board/stream", timeout=timeout) as stream:
        assert "Nothing queued" in "".join(await asyncio.wait_for(_first(stream), 10))
        async with other.post("/logout", data={"csrf": "x"}) as answer:
            assert answer.status == 403  # another session's sign-out needs its own token
        async with client.post("/logout", data={"csrf": csrf}, allow_redirects=False) as answer:
            assert answer.status == 303
        events.emit(redis, "job", "queued", job_id="import:globex:users:2024-05-02", tenant="globex", module="users")
        after = await asyncio.wait_for(_frames(stream), 10)  # the stream ends: wait_for fails the test if not
    assert not [f for f in after if "globex" in f]


async def _first(stream: aiohttp.ClientResponse) -> list[str]:
    lines: list[str] = []
    while (line := (await stream.content.readline()).decode()) != "\n" or not lines:
        if line.startswith("data: "):
            lines.append(line[6:])
    return lines


def _as_a_browser_resolves(location: str) -> str:
    """The host a browser goes to for a Location on https://console.example (the WHATWG URL parser's
    leniencies: C0 controls and spaces trimmed at the ends, tabs and newlines dropped, '\\' read as '/')."""
    cleaned = location.strip("".join(map(chr, range(0x21)))).replace("\t", "").replace("\n", "").replace("\r", "")
    return urlsplit(urljoin("https://console.example/", cleaned.replace("\\", "/"))).netloc


EDGES = ["/", "\\", "\t", "\n", "\r", " ", "\x0b", "\x00", ".", "%09", "evil.example", "@", ":"]


@settings(max_examples=500, derandomize=True, database=None)
@given(st.lists(st.sampled_from(EDGES)).map("".join))
# Found at e6b0bd9: a tab between the slashes passed the check, and browsers drop it.
@example("/\t/evil.example")
def test_where_a_sign_in_sends_the_browser_stays_on_the_console(raw: str) -> None:
    assert _as_a_browser_resolves(_next(raw)) == "console.example"


async def test_a_sign_in_link_cannot_send_the_browser_elsewhere(console: Console) -> None:
    client = console.session()
    async with client:
        async with client.get("/login") as page:
            found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert found is not None
        form = {"csrf": found[1], "token": "console-admin-token-9f3b", "next": "/\t/evil.example"}
        async with client.post("/login", data=form, allow_redirects=False) as answer:
            assert answer.status == 303
            assert _as_a_browser_resolves(answer.headers["Location"]) == "console.example"


async def test_a_sign_in_started_in_another_browser_does_not_sign_this_one_in(
    console_settings: Callable[..., ConsoleSettings], redis: Redis, unused_tcp_port: int
) -> None:
    """Login CSRF (RFC 6749 §10.12): the attacker starts a sign-in as themselves, stops at the callback
    URL and has an operator's browser open it; that browser must not end up signed in as the attacker."""
    async with running_idp() as idp:
        mallory = {"console_allowed_emails": "mallory@example.com"}
        settings = console_settings(**signing_in_with(idp, unused_tcp_port), **mallory)
        async with serve_console(settings) as console:
            idp.user = {"sub": "m", "email": "mallory@example.com", "email_verified": True}
            async with console.session() as attacker:
                callback = await callback_url(attacker, "/login/oidc")
            async with console.session() as victim:
                async with victim.get(callback) as answer:
                    assert answer.status == 403
                    assert "another browser" in await answer.text()
                async with victim.get("/imports") as page:
                    assert page.status == 401, "the operator's browser was signed in as the attacker"
            assert not idp.token_requests, "the attacker's code was exchanged"
            # In the browser that started it, the same steps sign in.
            async with console.session() as browser:
                async with browser.get(await callback_url(browser, "/login/oidc")) as answer:
                    assert answer.status == 200 and "mallory@example.com · read-only" in await answer.text()


@pytest.mark.parametrize("verified", [None, False, "false", "True", 1])
async def test_an_email_the_provider_does_not_say_it_verified_grants_nothing(
    console_settings: Callable[..., ConsoleSettings], redis: Redis, unused_tcp_port: int, verified: Any
) -> None:
    """Where a provider lets users set their own address (Entra ID's email claim, sent without email_verified),
    anyone naming an admin's address would sign in as admin."""
    async with running_idp() as idp:
        settings = console_settings(**signing_in_with(idp, unused_tcp_port), console_admin_emails="boss@example.com")
        async with serve_console(settings) as console:
            idp.user = {
                "sub": "m",
                "email": "Boss@Example.com",
                **({} if verified is None else {"email_verified": verified}),
            }
            async with console.session() as client, client.get("/login/oidc") as answer:
                assert answer.status == 403 and "not allowed" in await answer.text()
            idp.user["email_verified"] = True
            async with console.session() as client, client.get("/login/oidc") as answer:
                assert answer.status == 200 and "boss@example.com · admin" in await answer.text()
