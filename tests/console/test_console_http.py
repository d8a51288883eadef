"""The console over HTTP: who gets in, CSRF, bad input, escaping, secrets, keyset pages, actions, the live stream."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from arq.connections import ArqRedis, RedisSettings
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from services.console.pages import inert
from services.console.settings import ConsoleSettings
from shared import events
from shared.crypto import Sealer
from shared.job_json import create_pool
from shared.token_store import TokenRecord, TokenStore
from tests.console.conftest import READONLY_TOKEN, Console, serve_console
from tests.console.idp import running_idp, signing_in_with
from tests.importer.conftest import Database

PAGES = ["/", "/imports", "/tokens", "/schedules", "/audit"]


async def add_run(
    db: Database, tenant: str = "acme", module: str = "users", status: str = "failed", **cols: Any
) -> int:
    values = {"tenant_id": tenant, "module": module, "export_date": cols.pop("export_date", "2024-05-01"),
              "attempt": cols.pop("attempt", 1), "status": status, **cols}  # fmt: skip
    names = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    args = [__import__("datetime").date.fromisoformat(v) if k == "export_date" else v for k, v in values.items()]
    run_id: int = await db.value(f"INSERT INTO import_runs ({names}) VALUES ({marks}) RETURNING id", *args)
    return run_id


def test_the_console_refuses_to_start_open() -> None:
    with pytest.raises(ValidationError, match="needs a way to sign in"):
        ConsoleSettings(console_token=None, console_oidc_issuer=None)
    with pytest.raises(ValidationError, match="OIDC is incomplete"):
        ConsoleSettings(
            console_token=SecretStr("x" * 16), console_oidc_issuer="https://idp", console_oidc_client_id="c"
        )
    for field in ("console_token", "console_readonly_token"):
        short = "a guessable one"  # 15 characters
        with pytest.raises(ValidationError, match=f"CONDUIT_{field.upper()} must be at least 16") as refused:
            ConsoleSettings(**{"console_token": SecretStr("x" * 16), field: SecretStr(short)})
        assert short not in str(refused.value), "the refused token itself must not be echoed"


async def test_anonymous_gets_nothing_but_the_sign_in_page_and_the_ops_endpoints(console: Console) -> None:
    async with console.session() as client:
        for path in [*PAGES, "/runs/1", "/board/stream", "/runs/1/rejects.csv"]:
            async with client.get(path, allow_redirects=False) as answer:
                assert answer.status == 401, path
        async with client.get("/imports", headers={"Accept": "text/html"}, allow_redirects=False) as answer:
            assert answer.status == 303 and unquote(answer.headers["Location"]) == "/login?next=/imports"
        async with client.post("/runs/1/rerun", data={"csrf": "x"}) as answer:
            assert answer.status == 401
        for path in ["/health_check", "/metrics", "/login", "/static/htmx-2.0.11.min.js"]:
            async with client.get(path) as answer:
                assert answer.status == 200, path
        async with asyncio.timeout(5):  # ready once it follows the events
            while (await (answer := await client.get("/ready")).json())["ready"] is not True:
                assert answer.status == 503
                await asyncio.sleep(0.05)


async def test_token_sign_in_sets_a_session_cookie_that_scripts_cannot_read(console: Console) -> None:
    async with console.session() as client:
        async with client.get("/login") as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert csrf is not None
        async with client.post("/login", data={"csrf": csrf[1], "token": "wrong"}) as answer:
            assert answer.status == 401 and "not right" in await answer.text()
        async with client.post("/login", data={"csrf": "forged", "token": "wrong"}) as answer:
            assert answer.status == 403
        async with client.get("/login") as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert csrf is not None
        data = {"csrf": csrf[1], "token": console.settings.console_token.get_secret_value()}  # type: ignore[union-attr]
        headers = {"X-Forwarded-Proto": "https"}
        async with client.post("/login", data=data, headers=headers, allow_redirects=False) as answer:
            assert answer.status == 303
            cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


async def test_every_page_has_a_csp_and_a_post_without_csrf_is_refused(console: Console, db: Database) -> None:
    run_id = await add_run(db)
    client, csrf = await console.signed_in()
    async with client:
        for path in [*PAGES, f"/runs/{run_id}", "/login"]:
            async with client.get(path) as answer:
                assert answer.status == 200, path
                assert "script-src 'self'" in answer.headers["Content-Security-Policy"], path
        async with client.post(f"/runs/{run_id}/rerun", data={}) as answer:
            assert answer.status == 403 and "CSRF" in await answer.text()
        async with client.post(f"/runs/{run_id}/rerun", data={"csrf": csrf[:-2] + "xx"}) as answer:
            assert answer.status == 403
    assert await db.value("SELECT count(*) FROM import_runs") == 1


async def test_read_only_sees_but_cannot_act(console: Console, db: Database) -> None:
    run_id = await add_run(db)
    client, csrf = await console.signed_in(READONLY_TOKEN)
    async with client:
        async with client.get(f"/runs/{run_id}") as answer:
            assert answer.status == 200 and "Re-run this import" not in await answer.text()
        async with client.post(f"/runs/{run_id}/rerun", data={"csrf": csrf}) as answer:
            assert answer.status == 403 and "admin role" in await answer.text()
    assert await db.value("SELECT count(*) FROM console_audit") == 0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=exploded", "status 'exploded' is not one of"),
        ("from=2024-13-01", "from '2024-13-01' is not a date"),
        ("from=2024-05-02&to=2024-05-01", "is after to"),
        ("sort=password", "sort 'password' is not one of"),
        ("colour=red", "unknown filter 'colour'"),
        ("tenant=a&tenant=b", "given 2 times"),
        ("after=bm90LWEtY3Vyc29y", "not a page cursor"),
        ("tenant=" + "x" * 201, "longer than 200 characters"),
    ],
)
async def test_a_malformed_filter_is_a_400_that_says_what(console: Console, query: str, message: str) -> None:
    client, _ = await console.signed_in()
    async with client, client.get(f"/imports?{query}") as answer:
        assert answer.status == 400
        assert message in (await answer.text()).replace("&#39;", "'")


async def test_unknown_run_is_404(console: Console) -> None:
    client, _ = await console.signed_in()
    async with client:
        for path in ["/runs/999999", "/runs/abc", "/runs/999999/rejects.csv", "/runs/99999999999999999999999"]:
            async with client.get(path) as answer:
                assert answer.status == 404, path


async def test_html_in_names_and_rejected_values_is_shown_escaped(console: Console, db: Database) -> None:
    evil = "<script>alert(1)</script>"
    run_id = await add_run(db, tenant=f"acme{evil}", error_message=f"bad {evil}", rows_rejected=1)
    await db.value("INSERT INTO import_rejects (run_id, line, column_name, reason, raw) VALUES ($1, 2, $2, $3, $4)",
                   run_id, f"login{evil}", "too long", f"1,{evil},x")  # fmt: skip
    client, _ = await console.signed_in()
    async with client:
        for path in [f"/runs/{run_id}", "/imports"]:
            async with client.get(path) as answer:
                html = await answer.text()
            assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
        async with client.get(f"/runs/{run_id}/rejects.csv") as answer:
            assert answer.headers["Content-Type"].startswith("text/csv")
            assert "attachment" in answer.headers["Content-Disposition"]
            assert evil in await answer.text()  # the download is the data as it was, as a file, never rendered


@examples(max_examples=200, derandomize=True, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("=+-@\t\r\n,\"'a1 ")), max_size=12))
def test_no_rejected_value_becomes_a_spreadsheet_formula(value: str) -> None:
    """CSV injection: the rejects download is opened in spreadsheets; a value read back from it never starts
    a formula, and it is the original value but for one leading apostrophe."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([inert(value)])
    (cell,) = next(csv.reader(io.StringIO(buffer.getvalue(), newline="")))
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert cell in (value, "'" + value)


async def test_keyset_pages_walk_every_matching_run_once_in_order(
    console_settings: Callable[..., ConsoleSettings], db: Database, redis: Redis
) -> None:
    for day in range(1, 8):
        for tenant in ("acme", "globex"):
            await add_run(db, tenant=tenant, export_date=f"2024-05-0{day}",
                          status="failed" if day % 2 else "succeeded")  # fmt: skip
    async with serve_console(console_settings(console_page_size=3)) as console:
        client, _ = await console.signed_in()
        seen: list[int] = []
        async with client:
            url: str | None = "/imports?tenant=acme&sort=export_date&dir=asc"
            while url:
                async with client.get(url) as answer:
                    html = await answer.text()
                seen += [int(i) for i in re.findall(r'<td><a href="/runs/(\d+)">', html)]
                nxt = re.search(r'rel="next" href="([^"]+)"', html)
                url = nxt[1].replace("&amp;", "&") if nxt else None
    expected = await db.rows("SELECT id FROM import_runs WHERE tenant_id = 'acme' ORDER BY export_date, id")
    assert seen == [r["id"] for r in expected] and len(seen) == 7


async def test_no_token_or_secret_in_any_page(
    console: Console, db: Database, redis: Redis, token_key: SecretStr
) -> None:
    store = TokenStore(redis, Sealer(token_key, None))
    now = time.time()
    record = TokenRecord(
        tenant="acme", provider="demo", generation=3, access_token=SecretStr("AT-very-secret-4411"),
        refresh_token=SecretStr("RT-very-secret-9922"), issued_at=now - 60, expires_at=now + 3000,
        refresh_due_at=now + 1000, last_refresh_at=now,
    )  # fmt: skip
    await store.put(record, await store.next_fence("acme", "demo"))
    await add_run(db)
    client, _ = await console.signed_in()
    async with client:
        pages = [*PAGES, "/tokens/refresh?tenant=acme&provider=demo"]
        for path in pages:
            async with client.get(path) as answer:
                html = await answer.text()
            for secret in ("AT-very-secret-4411", "RT-very-secret-9922", token_key.get_secret_value()):
                assert secret not in html, path
        async with client.get("/tokens") as answer:
            assert "acme" in await answer.text()


async def test_rerun_from_the_console_queues_an_attempt_and_records_who(console: Console, db: Database) -> None:
    run_id = await add_run(db)
    await add_run(db, tenant="globex", module="users")
    client, csrf = await console.signed_in()
    async with client:
        async with client.get("/imports/rerun-failed?tenant=acme") as answer:
            assert re.search(r'id="affected">1<', await answer.text())
        async with client.post(f"/runs/{run_id}/rerun", data={"csrf": csrf}) as answer:
            assert answer.status == 200 and "1 enqueued" in await answer.text()
        async with client.post(f"/runs/{run_id}/rerun", data={"csrf": csrf}) as answer:
            assert "0 enqueued, 1 skipped" in await answer.text()
    queued = await db.rows("SELECT tenant_id, attempt, status, job_id FROM import_runs WHERE status = 'queued'")
    assert [(r["tenant_id"], r["attempt"]) for r in queued] == [("acme", 2)]
    arq: ArqRedis = await create_pool(RedisSettings.from_dsn(console.settings.redis_url))
    try:
        assert await arq.zscore(arq.default_queue_name, queued[0]["job_id"]) is not None
        # Cancel it: off the queue, and its ledger row says so.
        client, csrf = await console.signed_in()
        async with client, client.post("/jobs/cancel", data={"csrf": csrf, "job_id": queued[0]["job_id"]}) as answer:
            assert "cancelled" in await answer.text()
        assert await arq.zscore(arq.default_queue_name, queued[0]["job_id"]) is None
    finally:
        await arq.aclose()
    assert await db.value("SELECT error_class FROM import_runs WHERE job_id = $1", queued[0]["job_id"]) == "cancelled"
    audit = await db.rows("SELECT who, role, action FROM console_audit ORDER BY id")
    assert [(a["who"], a["role"], a["action"]) for a in audit] == [("token", "admin", "rerun")] * 2 + [
        ("token", "admin", "cancel_job")
    ]


async def test_pause_from_the_console_sets_what_the_scheduler_reads(console: Console, redis: Redis) -> None:
    from shared import pauses

    client, csrf = await console.signed_in()
    async with client:
        async with client.post("/schedules/pause", data={"csrf": csrf, "tenant": "acme", "module": "users"}) as answer:
            assert "acme/users: paused" in await answer.text()
        assert pauses.is_paused(await pauses.paused_schedules(redis), "acme", "users")
        async with client.get("/schedules?tenant=acme") as answer:
            assert "paused" in await answer.text()
        async with client.post("/schedules/resume", data={"csrf": csrf, "tenant": "acme", "module": "users"}) as answer:
            assert "resumed" in await answer.text()
        async with client.post("/schedules/pause", data={"csrf": csrf, "tenant": "<nobody>"}) as answer:
            assert answer.status == 400
    assert not await pauses.paused_schedules(redis)


async def test_the_live_stream_pushes_an_event_within_a_second(console: Console, redis: Redis) -> None:
    client, _ = await console.signed_in()
    async with client, client.get("/board/stream", timeout=aiohttp.ClientTimeout(total=10)) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        first = await _frame(stream)
        assert "Nothing queued" in first
        events.emit(redis, "job", "queued", job_id="import:acme:users:2024-05-01", tenant="acme", module="users")
        sent = time.monotonic()
        async with asyncio.timeout(1.0):
            while 'data-tenant="acme"' not in (frame := await _frame(stream)):
                pass
        assert time.monotonic() - sent < 1.0 and "2024-05-01" in frame


async def test_a_running_import_shows_its_stage_and_rows_so_far(console: Console, redis: Redis) -> None:
    client, _ = await console.signed_in()
    run = {"run_id": 7, "job_id": "import:acme:users:2024-05-01", "tenant": "acme", "module": "users"}
    async with client, client.get("/board/stream", timeout=aiohttp.ClientTimeout(total=10)) as stream:
        await _frame(stream)
        events.emit(redis, "import", "started", export_date="2024-05-01", attempt=1, **run)
        events.emit(redis, "import", "stage", stage="merge", **run)
        events.emit(redis, "import", "progress", rows=12000, **run)
        async with asyncio.timeout(2.0):
            while "12,000 rows" not in (frame := await _frame(stream)):
                pass
    assert '<span class="stage">merge</span>' in frame and 'href="/runs/7"' in frame


async def _frame(stream: aiohttp.ClientResponse) -> str:
    lines: list[str] = []
    while True:
        line = (await stream.content.readline()).decode()
        if line == "\n" and lines:
            return "\n".join(lines)
        if line.startswith("data: "):
            lines.append(line[6:].rstrip("\n"))


async def test_oidc_sign_in_with_pkce_admin_by_group_and_refused_when_not_allowed(
    console_settings: Callable[..., ConsoleSettings], redis: Redis, unused_tcp_port: int
) -> None:
    async with running_idp() as idp:
        settings = console_settings(
            **signing_in_with(idp, unused_tcp_port),
            console_admin_groups="conduit-admins",
            console_allowed_emails="viewer@example.com",
        )
        async with serve_console(settings) as console:
            idp.user = {"sub": "1", "email": "boss@example.com", "email_verified": True, "groups": ["conduit-admins"]}
            async with console.session() as client, client.get("/login/oidc?next=/tokens") as answer:
                assert answer.status == 200 and str(answer.url).endswith("/tokens")
                assert "boss@example.com · admin" in await answer.text()
            assert idp.token_requests[-1]["code_verifier"]  # PKCE: the verifier went to the token endpoint
            idp.user = {"sub": "2", "email": "viewer@example.com", "email_verified": True}
            async with console.session() as client, client.get("/login/oidc") as answer:
                assert "viewer@example.com · read-only" in await answer.text()
            idp.user = {"sub": "3", "email": "stranger@example.com", "groups": ["other"]}
            async with console.session() as client, client.get("/login/oidc") as answer:
                assert answer.status == 403 and "not allowed" in await answer.text()
                async with client.get("/imports") as page:
                    assert page.status == 401
            idp.user, idp.wrong_audience = (
                {"sub": "1", "email": "boss@example.com", "email_verified": True, "groups": ["conduit-admins"]},
                True,
            )
            async with console.session() as client, client.get("/login/oidc") as answer:
                assert answer.status == 403 and "did not check out" in await answer.text()


async def test_the_board_follows_events_again_after_redis_comes_back(
    console_settings: Callable[..., ConsoleSettings], redis: Redis, redis_url: str
) -> None:
    from tests.scheduler.fault_proxy import fault_proxy

    async with fault_proxy(redis_url) as proxy, serve_console(console_settings(redis_url=proxy.url)) as console:
        client, _ = await console.signed_in()
        async with client, client.get("/board/stream", timeout=aiohttp.ClientTimeout(total=30)) as stream:
            await _frame(stream)
            proxy.set("down")
            async with asyncio.timeout(10):
                while "reconnecting to events" not in await _frame(stream):
                    pass
            proxy.set("up")
            async with asyncio.timeout(10):
                while "reconnecting to events" in await _frame(stream):
                    pass
            events.emit(redis, "job", "queued", job_id="import:acme:users:2024-05-02", tenant="acme", module="users")
            async with asyncio.timeout(2):
                while "2024-05-02" not in await _frame(stream):
                    pass


async def test_force_refresh_enqueues_an_operator_refresh_for_a_worker(console: Console, redis: Redis) -> None:
    from arq.jobs import deserialize_job

    from shared.job_json import loads

    client, csrf = await console.signed_in()
    async with client:
        async with client.get("/tokens/refresh?tenant=acme&provider=demo") as answer:
            assert "Refresh the token of acme/demo" in await answer.text()
        async with client.post("/tokens/refresh", data={"csrf": csrf, "tenant": "acme", "provider": "demo"}) as answer:
            assert "enqueued job refresh:acme:demo:operator:" in await answer.text()
        async with client.post("/tokens/refresh", data={"csrf": csrf, "tenant": "acme", "provider": "nope"}) as answer:
            assert answer.status == 400
    (job_id,) = [m.decode() for m in await redis.zrange("arq:queue", 0, -1)]
    job = deserialize_job(await redis.get(f"arq:job:{job_id}"), deserializer=loads)
    assert (job.function, job.args) == ("refresh_token", ("acme", "demo", True))


async def test_schedules_say_which_last_fire_was_missed(console: Console, redis: Redis) -> None:
    from shared.jobs import import_job_id
    from shared.modules import catalogue
    from shared.redis_keys import scheduler_imports
    from shared.schedules import Schedule

    fired = Schedule("0 2 * * *", "UTC", 0).fires(time.time() - 86400, time.time())[-1]
    client, _ = await console.signed_in()
    async with client:
        async with client.get("/schedules?tenant=acme") as answer:
            html = await answer.text()
        assert html.count("missed, catch-up pending") == len(catalogue().names())
        ids = [import_job_id("acme", m, fired.export_date) for m in catalogue().names()]
        await redis.sadd(scheduler_imports(fired.export_date), *ids)
        async with client.get("/schedules?tenant=acme") as answer:
            html = await answer.text()
        assert "missed, catch-up pending" not in html and html.count("on time") == len(ids)
        async with client.get("/schedules?tenant=%3Cnobody%3E") as answer:
            assert answer.status == 404
