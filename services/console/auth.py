"""Who may see the console and who may act: sign-in (static token or OIDC), sessions, CSRF, roles.

Every page but the operations endpoints, the sign-in pages and the static
files needs a session; every POST needs the session's CSRF token; actions need
the admin role.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from services.console import keys
from services.console.oidc import SignInRefused, SignInUnknown
from services.console.sessions import COOKIE, User
from shared.logging import get_logger
from shared.ops_http import OPS_PATHS

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = frozenset({*OPS_PATHS, "/login", "/login/oidc", "/login/callback", "/favicon.ico"})
LOGIN_CSRF = "conduit_console_login"
# Ties an OpenID Connect sign-in to the browser that started it (oidc.Oidc.finish).
OIDC_BROWSER = "conduit_console_oidc"
_BROWSER_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
USER = web.RequestKey("user", User)


def user(request: web.Request) -> User:
    return request[USER]


def secure(request: web.Request) -> bool:
    mode = request.app[keys.SETTINGS].console_cookie_secure
    if mode != "auto":
        return mode == "always"
    return bool(request.secure) or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


@web.middleware
async def require_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC or request.path.startswith("/static/"):
        return await handler(request)
    found = await request.app[keys.SESSIONS].get(request.cookies.get(COOKIE))
    if found is None:
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        raise web.HTTPUnauthorized(text="sign in first (/login)")
    request[USER] = found
    if request.method not in ("GET", "HEAD"):
        await check_csrf(request, found.csrf)
    return await handler(request)


async def check_csrf(request: web.Request, expected: str) -> None:
    sent = request.headers.get("X-CSRF-Token")
    if sent is None:
        form = await request.post()
        value = form.get("csrf")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        log.warning("request refused: missing or wrong CSRF token", path=request.path)
        raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and try again")


def require_admin(request: web.Request) -> User:
    found = user(request)
    if not found.admin:
        raise web.HTTPForbidden(text="this action needs the admin role; you are signed in read-only")
    return found


# A path on this site in printable ASCII, never '//' or a backslash at its start: browsers drop tabs and
# newlines anywhere in a URL and read '\' as '/', so '/\t/evil.example' would leave the site.
_LOCAL_PATH = re.compile(r"/(?![/\\])[!-\[\]-~]*")


def _next(raw: str | None) -> str:
    """Where to go after signing in: only a path on this site, never a URL an attacker chose."""
    return raw if raw and _LOCAL_PATH.fullmatch(raw) else "/"


async def login_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    settings = request.app[keys.SETTINGS]
    token = secrets.token_urlsafe(24)
    context = {
        "csrf": token,
        "next": _next(request.query.get("next")),
        "token_enabled": settings.console_token is not None,
        "oidc_enabled": settings.oidc_enabled,
        "error": error,
        "user": None,
    }
    response = aiohttp_jinja2.render_template("login.html", request, context, status=status)
    response.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="Strict", secure=secure(request), path="/login")
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """The static-token sign-in form's POST (double-submit CSRF: the form's token must match its cookie)."""
    form = await request.post()
    expected = request.cookies.get(LOGIN_CSRF, "")
    sent = str(form.get("csrf", ""))
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the sign-in page")
    settings = request.app[keys.SETTINGS]
    given = str(form.get("token", "")).encode()
    role = None
    for secret, granted in ((settings.console_token, "admin"), (settings.console_readonly_token, "readonly")):
        if secret is not None and hmac.compare_digest(given, secret.get_secret_value().encode()):
            role = granted
    if role is None:
        log.warning("console sign-in refused: wrong token")
        return await login_page(request, "That token is not right.", status=401)
    return await _signed_in(request, "token" if role == "admin" else "token (read-only)", role, "token",
                            _next(str(form.get("next", "/"))))  # fmt: skip


async def _signed_in(request: web.Request, name: str, role: str, via: str, next_path: str) -> web.StreamResponse:
    sessions = request.app[keys.SESSIONS]
    await sessions.drop(request.cookies.get(COOKIE))
    session_id, _ = await sessions.create(name, "admin" if role == "admin" else "readonly", via)
    log.info("console sign-in", user=name, role=role, via=via)
    response = web.HTTPSeeOther(next_path)
    ttl = int(request.app[keys.SETTINGS].console_session_ttl)
    response.set_cookie(
        COOKIE, session_id, httponly=True, samesite="Lax", secure=secure(request), max_age=ttl, path="/"
    )
    response.del_cookie(LOGIN_CSRF, path="/login")
    raise response


async def oidc_start(request: web.Request) -> web.StreamResponse:
    oidc = request.app[keys.OIDC]
    if oidc is None:
        raise web.HTTPNotFound(text="OIDC sign-in is not configured")
    browser = request.cookies.get(OIDC_BROWSER, "")
    if not _BROWSER_SECRET.fullmatch(browser):
        browser = secrets.token_urlsafe(32)
    try:
        url = await oidc.start(_next(request.query.get("next")), browser)
    except Exception as exc:  # the provider is down or its discovery document is broken
        log.warning("oidc provider unreachable", error=type(exc).__name__)
        return await login_page(request, "The identity provider cannot be reached; try again later.", status=502)
    response = web.HTTPSeeOther(url)
    # Lax, not Strict: the provider sends the browser back by a cross-site top-level GET, which Lax lets through.
    response.set_cookie(OIDC_BROWSER, browser, httponly=True, samesite="Lax", secure=secure(request),
                        path="/login", max_age=600)  # fmt: skip
    raise response


async def oidc_callback(request: web.Request) -> web.StreamResponse:
    oidc = request.app[keys.OIDC]
    if oidc is None:
        raise web.HTTPNotFound(text="OIDC sign-in is not configured")
    if "error" in request.query:
        return await login_page(request, "The identity provider refused the sign-in.", status=403)
    code, state = request.query.get("code"), request.query.get("state")
    if not code or not state:
        return await login_page(request, "The sign-in answer lacks its code or state.", status=400)
    try:
        identity, next_path = await oidc.finish(code, state, request.cookies.get(OIDC_BROWSER))
    except SignInUnknown as exc:
        return await login_page(request, str(exc), status=400)
    except SignInRefused as exc:
        return await login_page(request, str(exc), status=403)
    return await _signed_in(request, identity.name, identity.role, "oidc", _next(next_path))


async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[keys.SESSIONS].drop(request.cookies.get(COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response
