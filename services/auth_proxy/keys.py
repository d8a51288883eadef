"""Typed keys for what the proxy's app holds, created once per process in ``app.py``'s cleanup contexts."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from services.auth_proxy.forward import Forwarder
from services.auth_proxy.settings import ProxySettings
from services.auth_proxy.token_cache import TokenCache
from shared.tenants import TenantsConfig
from shared.token_store import TokenStore


@dataclass
class FeedState:
    """Whether the token change feed (pub/sub) is connected; part of readiness."""

    connected: bool = False
    errors: list[str] = field(default_factory=list)


SETTINGS = web.AppKey("settings", ProxySettings)
TENANTS = web.AppKey("tenants", TenantsConfig)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", TokenStore)
TOKEN_CACHE = web.AppKey("token_cache", TokenCache)
FEED = web.AppKey("feed", FeedState)
SESSION = web.AppKey("session", aiohttp.ClientSession)
FORWARDER = web.AppKey("forwarder", Forwarder)
