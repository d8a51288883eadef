"""The auth proxy's app factory: callers send no token, the proxy adds the tenant's and forwards."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from services.auth_proxy import keys
from services.auth_proxy.forward import Forwarder
from services.auth_proxy.response_cache import ResponseCache
from services.auth_proxy.settings import ProxySettings
from services.auth_proxy.token_cache import TokenCache, listen_for_changes
from services.auth_proxy.upstream import UpstreamPool
from shared.crypto import RecordUnreadable, Sealer
from shared.logging import get_logger
from shared.ops_http import add_ops_routes
from shared.redis_client import create_redis
from shared.refresh import Refresher
from shared.tenants import TenantsConfig, load_tenants
from shared.token_store import TokenStore
from shared.urls import redact_url

log = get_logger(__name__)


def create_app(settings: ProxySettings | None = None, tenants: TenantsConfig | None = None) -> web.Application:
    """Build the proxy. Bad settings or a bad tenants file raise here, before anything listens."""
    settings = settings or ProxySettings()
    tenants = tenants or load_tenants(settings.tenants_file)
    sealer = Sealer(settings.token_key, settings.token_key_old)
    app = web.Application(handler_args={"max_field_size": settings.proxy_max_header_size})
    app[keys.SETTINGS] = settings
    app[keys.TENANTS] = tenants
    app[keys.FEED] = keys.FeedState()
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(lambda a: _tokens_ctx(a, sealer))
    app.cleanup_ctx.append(_forwarder_ctx)
    add_ops_routes(app, lambda: _ready(app))
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app


async def _forward(request: web.Request) -> web.StreamResponse:
    return await request.app[keys.FORWARDER].handle(request)


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    redis = create_redis(settings.redis_url, settings.redis_timeout)
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        # Keep starting: the in-memory tokens and /ready tell the rest, and the feed reconnects.
        log.error("redis unreachable at start", redis_url=redact_url(settings.redis_url), error=type(exc).__name__)
    app[keys.REDIS] = redis
    yield
    await redis.aclose()


async def _tokens_ctx(app: web.Application, sealer: Sealer) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    store = TokenStore(app[keys.REDIS], sealer)
    cache = TokenCache(store, Refresher(store, app[keys.TENANTS], settings.refresh_policy()))
    app[keys.STORE] = store
    app[keys.TOKEN_CACHE] = cache
    feed = app[keys.FEED]
    listener = asyncio.create_task(listen_for_changes(cache, store, lambda up: setattr(feed, "connected", up)))
    yield
    listener.cancel()
    cache.forget()
    with contextlib.suppress(asyncio.CancelledError):
        await listener


async def _forwarder_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=settings.proxy_connect_timeout, sock_read=settings.proxy_read_timeout
    )
    ca_file = settings.proxy_upstream_ca_file
    tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.proxy_pool_size, ttl_dns_cache=300, ssl=tls),
        timeout=timeout,
        # Never keep cookies: one tenant's session must not leak into another's requests.
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        trust_env=False,
        read_bufsize=256 << 10,
    )
    # Requests with a body in memory (nearly all) take the lean pool; streamed uploads the session.
    pool = UpstreamPool(
        limit=settings.proxy_pool_size,
        connect_timeout=settings.proxy_connect_timeout,
        read_timeout=settings.proxy_read_timeout,
        read_bufsize=256 << 10,
        tls=tls,
    )
    cache = None
    if settings.proxy_cache_enabled:
        cache = ResponseCache(app[keys.REDIS], settings.proxy_cache_routes, settings.proxy_cache_max_entry_bytes)
    app[keys.SESSION] = session
    forwarder = Forwarder(settings, app[keys.TENANTS], app[keys.TOKEN_CACHE], session, pool, cache)
    app[keys.FORWARDER] = forwarder
    yield
    forwarder.close()
    await pool.close()
    await session.close()


async def _ready(app: web.Application) -> dict[str, str]:
    checks = {"redis": "ok", "token_store": "ok", "token_feed": "ok"}
    try:
        await app[keys.REDIS].ping()
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
        checks["token_store"] = "unknown"
    else:
        checks["token_store"] = await _store_readable(app)
    if not app[keys.FEED].connected:
        checks["token_feed"] = "not subscribed to token changes"
    return checks


async def _store_readable(app: web.Application) -> str:
    """Reading one record proves the token key matches what is stored."""
    for tenant, provider in app[keys.TENANTS].pairs():
        try:
            await app[keys.STORE].get(tenant, provider)
        except RecordUnreadable as exc:
            return str(exc)
        except (RedisError, OSError) as exc:
            return f"unreadable: {type(exc).__name__}"
        break
    return "ok"
