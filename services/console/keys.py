"""The console's per-process resources, kept on the aiohttp app under typed keys (made in ``app.lifecycle``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from shared.job_json import JsonArqRedis

if TYPE_CHECKING:
    from services.console.board import Board
    from services.console.oidc import Oidc
    from services.console.sessions import Sessions
    from services.console.settings import ConsoleSettings
    from shared.tenants import TenantsConfig
    from shared.token_store import TokenStore

SETTINGS: web.AppKey[ConsoleSettings] = web.AppKey("settings")
REDIS = web.AppKey("redis", JsonArqRedis)
POOL = web.AppKey("pool", asyncpg.Pool)
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions")
OIDC: web.AppKey[Oidc | None] = web.AppKey("oidc")
BOARD: web.AppKey[Board] = web.AppKey("board")
TENANTS: web.AppKey[TenantsConfig] = web.AppKey("tenants")
TOKENS: web.AppKey[TokenStore | None] = web.AppKey("tokens")
