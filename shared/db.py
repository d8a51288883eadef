"""PostgreSQL connections made the same way everywhere: one asyncpg pool per process, codecs set in ``init``.

Every connection talks UTC and ISO dates, so a timestamp without a zone in an
export means UTC and ``01/02/2024`` is never read as the 1st of February on one
server and the 2nd of January on another.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.logging import get_logger
from shared.urls import redact_url

log = get_logger(__name__)

SERVER_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "iso_8601"}
# asyncpg's errors that mean "the server is not there (yet)" rather than "the query is wrong".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
)


class DatabaseSettings(BaseSettings):
    """``CONDUIT_DATABASE_URL`` and how long to wait for it, for every process that talks to PostgreSQL."""

    # Inputs hidden in errors: the URL may carry a password (shared/settings.py says more).
    model_config = SettingsConfigDict(env_prefix="CONDUIT_", extra="ignore", frozen=True, hide_input_in_errors=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    # A process starting with (or before) PostgreSQL waits this long for it before giving up.
    database_connect_wait: float = Field(default=60.0, ge=0)

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, url: str) -> str:
        # Refused here, not at the first connection, where asyncpg's error repeats the scheme (a password, when
        # "user:pass@host" lost its "postgresql://").
        if url.split("://", 1)[0] not in ("postgresql", "postgres") or "://" not in url:
            raise ValueError("expected a postgresql:// URL")
        return url


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb with orjson (several times faster than the json module asyncpg uses by default)."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads
        )


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, application_name: str = "conduit", **kwargs: Any
) -> asyncpg.Pool:
    """A pool with Conduit's codecs and session settings; close it with ``await pool.close()``."""
    settings = {**SERVER_SETTINGS, "application_name": application_name, **kwargs.pop("server_settings", {})}
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, server_settings=settings, **kwargs
    )
    return pool


async def create_pool_with_retry(dsn: str, wait: float, **kwargs: Any) -> asyncpg.Pool:
    """Like :func:`create_pool`, but waits up to ``wait`` seconds for a server that is still starting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.2
    while True:
        try:
            return await create_pool(dsn, **kwargs)
        except UNAVAILABLE as exc:
            if loop.time() + delay > deadline:
                raise
            log.warning("database unavailable; retrying", database=redact_url(dsn), error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
