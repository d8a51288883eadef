"""The auth proxy: callers send no token, the proxy adds the tenant's and forwards.

``ProxyApp`` owns what serving needs (Redis, the token cache and its change
feed, the upstream pool, the forwarder) and answers every request the server
parses: the operations endpoints itself, everything else through the forwarder.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator

from multidict import CIMultiDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.auth_proxy.forward import Forwarder
from services.auth_proxy.response_cache import ResponseCache
from services.auth_proxy.settings import ProxySettings
from services.auth_proxy.token_cache import TokenCache, listen_for_changes
from services.auth_proxy.transport.exchange import Exchange
from services.auth_proxy.transport.server import Limits, Server
from services.auth_proxy.transport.upstream import UpstreamPool
from shared.crypto import BoundSealer, RecordUnreadable, Sealer
from shared.logging import get_logger
from shared.ops_http import OPS_PATHS, ops_answer
from shared.redis_client import create_redis
from shared.refresh import Refresher
from shared.tenants import TenantsConfig, load_tenants
from shared.token_store import TokenStore
from shared.urls import redact_url

log = get_logger(__name__)


def create_app(settings: ProxySettings | None = None, tenants: TenantsConfig | None = None) -> ProxyApp:
    """The proxy's app factory. Bad settings or a bad tenants file raise here, before anything listens."""
    return ProxyApp(settings, tenants)


# Pairs /ready reads, at most, to tell a wrong token key from one damaged record.
_READY_LOOKUPS = 16


class ProxyApp:
    """The proxy's parts, started and stopped together; ``handle`` is the server's one handler."""

    def __init__(self, settings: ProxySettings | None = None, tenants: TenantsConfig | None = None) -> None:
        """Bad settings or a bad tenants file raise here, before anything listens."""
        self.settings = settings = settings or ProxySettings()
        self.tenants = tenants or load_tenants(settings.tenants_file)
        self._sealer = Sealer(settings.token_key, settings.token_key_old)
        self._cache_sealer = BoundSealer("response cache", settings.token_key, settings.token_key_old)
        self.feed_connected = False
        self._stack: contextlib.AsyncExitStack | None = None
        self._redis: Redis | None = None
        self._store: TokenStore | None = None
        self._forwarder: Forwarder | None = None

    @property
    def limits(self) -> Limits:
        return Limits(
            max_field_size=self.settings.proxy_max_header_size,
            keepalive_timeout=self.settings.proxy_keepalive_timeout,
        )

    async def start(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def handle(self, request: Exchange) -> None:
        path = request.raw_path.partition("?")[0]
        if path in OPS_PATHS and request.method in ("GET", "HEAD"):
            # Never logged, never counted: probes hit these every few seconds.
            status, content_type, body = await ops_answer(path, self.ready)
            request.answer(status, CIMultiDict({"Content-Type": content_type}), body)
            return
        assert self._forwarder is not None, "ProxyApp.start() first"
        await self._forwarder.handle(request)

    async def ready(self) -> dict[str, str]:
        checks = {"redis": "ok", "token_store": "ok", "token_feed": "ok"}
        assert self._redis is not None
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
            checks["token_store"] = "unknown"
        else:
            checks["token_store"] = await self._store_readable()
        if not self.feed_connected:
            checks["token_feed"] = "not subscribed to token changes"
        return checks

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        settings = self.settings
        redis = create_redis(settings.redis_url, settings.redis_timeout, settings.redis_location())
        stack.push_async_callback(redis.aclose)
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            # Keep starting: the in-memory tokens and /ready tell the rest, and the feed reconnects.
            log.error("redis unreachable at start", redis_url=redact_url(settings.redis_url), error=type(exc).__name__)
        self._redis = redis
        self._store = store = TokenStore(redis, self._sealer)
        tokens = TokenCache(store, Refresher(store, self.tenants, settings.refresh_policy()))
        listener = asyncio.create_task(listen_for_changes(tokens, store, self._feed_state))
        stack.push_async_callback(_cancelled, listener)
        stack.callback(tokens.forget)

        ca_file = settings.proxy_upstream_ca_file
        tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        # Every request goes upstream through this one pool, streamed uploads too.
        pool = UpstreamPool(
            limit=settings.proxy_pool_size,
            connect_timeout=settings.proxy_connect_timeout,
            read_timeout=settings.proxy_read_timeout,
            read_bufsize=256 << 10,
            tls=tls,
        )
        stack.push_async_callback(pool.close)
        cache = None
        if settings.proxy_cache_enabled:
            cache = ResponseCache(
                redis, settings.proxy_cache_routes, settings.proxy_cache_max_entry_bytes, self._cache_sealer
            )
        self._forwarder = Forwarder(settings, self.tenants, tokens, pool, cache)
        stack.callback(self._forwarder.close)

    def _feed_state(self, connected: bool) -> None:
        self.feed_connected = connected

    async def _store_readable(self) -> str:
        """Whether the token key opens what is stored: one readable record proves it.

        A wrong key makes every record unreadable, and then the proxy must leave rotation. One damaged
        record must not: that pair's requests fail on their own (503 naming the pair), the others are
        served. So the first ``_READY_LOOKUPS`` pairs are read (a bounded cost per probe) and any record
        that opens passes; only records that exist and all fail to open make the store unreadable.
        """
        assert self._store is not None
        unreadable: str | None = None
        for tenant, provider in itertools.islice(self.tenants.pairs(), _READY_LOOKUPS):
            try:
                if await self._store.get(tenant, provider) is not None:
                    return "ok"
            except RecordUnreadable as exc:
                unreadable = str(exc)
            except (RedisError, OSError) as exc:
                return f"unreadable: {type(exc).__name__}"
        return unreadable or "ok"


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def running_proxy(app: ProxyApp, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Start ``app`` listening on host:port (0: a free port) in this event loop; yields its URL, then drains."""
    await app.start()
    try:
        server = Server(app.handle, app.limits)
        bound_host, bound_port = (await server.listen(host, port))[0]
        try:
            yield f"http://{bound_host}:{bound_port}"
        finally:
            await server.shutdown(app.settings.proxy_shutdown_timeout)
    finally:
        await app.stop()
