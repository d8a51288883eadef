"""The console in a real browser: Playwright driving Debian's chromium (``make test`` installs it when root).

Few and focused: one walk through the operator's day (sign in, the scheduler
enqueues, the board shows it, the worker fails it, open the run, its rejects,
re-run it, watch it succeed) and one of refusals and bad input. Each page is
saved as a PNG under .run/console-screenshots/ (docs/console.md's pictures come from there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from pydantic import SecretStr
from redis.asyncio import Redis

from services.console import keys
from services.console.settings import ConsoleSettings
from services.scheduler.daily_imports import DailyImports
from services.scheduler.import_plan import MIN_SPREAD
from shared import events
from shared.schedules import import_entries
from tests.console.conftest import ADMIN_TOKEN, Console, serve_console
from tests.console.idp import callback_url, running_idp, signing_in_with
from tests.importer.conftest import Importer
from tests.importer.support import Exports, export_body

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / ".run" / "console-screenshots"
EVIL = "<script>alert('x')</script>"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="chromium is not installed (make test installs it with apt-get when run as root; "
    "otherwise: apt-get install chromium)",
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        await launched.close()


async def shot(page: Page, name: str, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=full_page)


async def sign_in(page: Page, console: Console, token: str = ADMIN_TOKEN) -> None:
    await page.goto(console.url + "/")
    await expect(page.get_by_role("heading", name="Sign in to the Conduit console")).to_be_visible()
    await page.get_by_label("Console token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Live board")).to_be_visible()


async def test_an_import_from_schedule_to_failure_to_a_rerun_that_succeeds(
    browser: Browser, console: Console, importer: Importer, exports: Exports
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    complaints: list[str] = []
    page.on("console", lambda m: complaints.append(m.text) if m.type in ("error", "warning") else None)
    await page.goto(console.url + "/")
    await shot(page, "login")
    await sign_in(page, console)
    # The scheduler's own code enqueues the day's import: it appears on the board within a second.
    exports.set("users", export_body("users", f"user_id,login,email\nabc,{EVIL},a@x\n1,ok,ok@x\n"))
    groups = import_entries(importer.tenants, ["users"])
    daily = DailyImports(importer.arq, groups, 86400.0, 60.0)
    # The tick right after the last fire whose spread window has passed, so each job is due at its slot now.
    # (The last fire itself would not do within the window after it: 02:00-02:30 UTC each day, by default.)
    schedule = next(iter(groups))
    window = max(schedule.spread, MIN_SPREAD) + 1
    fired = schedule.fires(time.time() - 2 * 86400, time.time() - window)[-1].at
    assert await daily.tick(fired + 1) == 2
    acme = page.locator('tr[data-tenant="acme"][data-module="users"]')
    await expect(acme.locator("td.queued a.job")).to_have_count(1, timeout=1000)
    await shot(page, "board")
    # The worker fails both (too many rejects); the board says so within a second of the worker finishing.
    await importer.drain()
    await expect(acme.locator("td.failed")).to_have_text("1", timeout=1000)
    await expect(acme.locator("td.queued a.job")).to_have_count(0)
    # Filter the imports, open the failed run, see its rejects (the <script> shown as text).
    await page.get_by_role("link", name="Imports").click()
    await page.get_by_label("Tenant").fill("acme")
    await page.get_by_label("Status").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.runs tbody tr")
    await expect(rows).to_have_count(1)
    await shot(page, "imports")
    await rows.first.get_by_role("link").first.click()
    await expect(page.get_by_text("too_many_rejects")).to_be_visible()
    await expect(page.locator("table.rejects code").first).to_contain_text(EVIL)
    assert await page.evaluate("document.querySelectorAll('main script').length") == 0
    await shot(page, "run")
    # Re-run it (confirm: one run), the worker imports the fixed file, and the new attempt succeeded.
    exports.set("users", export_body("users", "user_id,login,email\n1,ok,ok@x\n2,fine,f@x\n"))
    await page.get_by_role("link", name="Re-run this import…").click()
    await expect(page.locator("#affected")).to_have_text("1")
    await shot(page, "confirm")
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("heading", name="Re-run: 1 enqueued, 0 skipped")).to_be_visible()
    new_run = await page.locator("main p a").first.get_attribute("href")
    await page.get_by_role("link", name="Live board").click()
    await expect(acme.locator("td.queued a.job")).to_have_count(1, timeout=1000)
    await importer.drain()
    await expect(acme.locator("td.done")).to_have_text("1", timeout=1000)
    await page.goto(f"{console.url}{new_run}")
    await expect(page.locator("p.status-succeeded")).to_contain_text("succeeded")
    await page.get_by_role("link", name="Audit").click()
    await expect(page.locator("table.audit tbody tr")).to_have_count(1)
    await shot(page, "audit")
    # htmx and its SSE extension ran under the page's CSP without one violation or script error.
    assert complaints == [], complaints


async def test_refusals_bad_input_and_no_secret_in_any_page(
    browser: Browser, console: Console, token_key: SecretStr
) -> None:
    anonymous = await browser.new_page()
    answer = await anonymous.request.get(console.url + "/imports")
    assert answer.status == 401
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await sign_in(page, console)
    # An action without the CSRF token is refused, even with the session cookie.
    answer = await page.request.post(console.url + "/schedules/pause", form={"tenant": "acme"})
    assert answer.status == 403 and "CSRF" in await answer.text()
    await page.goto(console.url + "/runs/424242")
    await expect(page.get_by_text("There is no import run 424242")).to_be_visible()
    await page.goto(console.url + "/imports?from=yesterday")
    await expect(page.get_by_role("alert")).to_contain_text("from 'yesterday' is not a date")
    await page.goto(console.url + "/imports?q=" + "x" * 5000)
    await expect(page.get_by_role("alert")).to_contain_text("longer than 200 characters")
    await page.goto(console.url + "/imports?tenant=" + EVIL.replace("'", "%27"))
    assert await page.locator("input[name=tenant]").input_value() == EVIL
    for path, name in [("/tokens", "tokens"), ("/schedules?tenant=acme", "schedules")]:
        await page.goto(console.url + path)
        await shot(page, name, full_page=False)
        html = await page.content()
        assert ADMIN_TOKEN not in html and token_key.get_secret_value() not in html


async def test_the_board_reconnects_by_itself_after_the_console_restarts(
    browser: Browser, console_settings: Callable[..., ConsoleSettings], redis: Redis, unused_tcp_port: int
) -> None:
    settings = console_settings(console_port=unused_tcp_port)
    page = await browser.new_page()
    async with serve_console(settings) as console:
        await sign_in(page, console)
    # The console is gone (a restart, a new pod): the page stays, and picks the stream up again by itself.
    async with serve_console(settings) as console:
        board = console.app[keys.BOARD]
        async with asyncio.timeout(10):
            while not board.connected:  # the new console follows the events (what /ready reports)
                await asyncio.sleep(0.05)
        events.emit(redis, "job", "queued", job_id="import:acme:users:2024-05-03", tenant="acme", module="users")
        row = page.locator('tr[data-tenant="acme"][data-module="users"] td.queued')
        await expect(row).to_contain_text("2024-05-03", timeout=10_000)


async def test_oidc_signs_in_only_the_browser_that_started_it(
    browser: Browser, console_settings: Callable[..., ConsoleSettings], redis: Redis, unused_tcp_port: int
) -> None:
    """In chromium: the provider's redirect back carries the sign-in cookie (SameSite=Lax), and an attacker's
    callback URL opened in an operator's browser signs no one in (login CSRF)."""
    async with running_idp() as idp:
        mallory = {"console_allowed_emails": "mallory@example.com"}
        settings = console_settings(**signing_in_with(idp, unused_tcp_port), **mallory)
        async with serve_console(settings) as console:
            idp.user = {"sub": "m", "email": "mallory@example.com", "email_verified": True}
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as attacker:
                callback = await callback_url(attacker, console.url + "/login/oidc")
            operator = await (await browser.new_context()).new_page()
            await operator.goto(callback)
            await expect(operator.get_by_text("this sign-in was started in another browser")).to_be_visible()
            await shot(operator, "oidc-refused", full_page=False)
            await operator.goto(console.url + "/imports")
            await expect(operator.get_by_role("heading", name="Sign in to the Conduit console")).to_be_visible()
            # The same steps in one browser sign in.
            await operator.get_by_role("link", name="Sign in with your company account").click()
            await expect(operator.get_by_text("mallory@example.com · read-only")).to_be_visible()
            await expect(operator.get_by_role("heading", name="Imports")).to_be_visible()
