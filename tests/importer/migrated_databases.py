"""Migrated databases for tests: one template migrated per test process, a copy of it per test.

Migrating a schema of its own for every test cost ~0.45 s a test (0002 alone makes 60 tables, each with its
toast table and key), and grows with every migration; its ``DROP SCHEMA ... CASCADE`` locks each of the ~280
objects at once, and a few sessions doing so together filled the server's lock table ("out of shared
memory"). ``CREATE DATABASE ... TEMPLATE`` copies the template's files instead: the same few megabytes and
a handful of locks whatever the migrations hold. Tests about migrating itself still migrate a schema.

Copying (a few megabytes of WAL, flushed) and dropping are disk waits, not work: both run on this object's
own thread while tests run, the next test's copy made while the current test runs. ``DROP DATABASE`` waits
for a checkpoint (PostgreSQL forces one so the checkpointer forgets the files), which writes out every
session's changes on the server; drops that wait together share one, so databases are dropped a batch at a
time, and ``close`` drops the rest and waits for them all.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from conduit.db_cli import Migration, apply_migrations

T = TypeVar("T")
# Databases dropped together (one checkpoint, a connection each); at most this many wait, ~10 MB apiece.
DROP_BATCH = 8


def with_database(dsn: str, name: str) -> str:
    """The DSN pointing at database ``name`` on the same server, with the same options."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


class MigratedDatabases:
    """Databases copied from a template migrated once, on the server ``server_url`` points at.

    Names are random, so test processes and other sessions on one server never meet. Calls may come from
    any thread or event loop: the statements run on an event loop of this object's own thread.
    """

    def __init__(self, server_url: str, migrations: list[Migration]) -> None:
        self._server_url = server_url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="migrated-databases", daemon=True)
        self._thread.start()
        self._unused: list[str] = []
        self._drops: list[Future[None]] = []
        self.template = f"conduit_template_{secrets.token_hex(6)}"
        self._wait(self._make_template(migrations))
        self._next = self._start(self._copy())

    def create(self) -> str:
        """A new database holding what the migrations make, and no rows of any other test; its URL."""
        url = self._next.result()
        self._next = self._start(self._copy())
        return url

    def drop(self, url: str) -> None:
        """Drop a database ``create`` made, soon and in the background; connections still open to it are ended."""
        self._unused.append(urlsplit(url).path.lstrip("/"))
        if len(self._unused) >= DROP_BATCH:
            self._drop_unused()

    def close(self) -> None:
        """Wait for the drops (raising the first that failed), then drop the template and stop the thread."""
        try:
            self.drop(self._next.result())
            self._drop_unused()
            for drop in self._drops:
                drop.result()
            self._wait(self._execute(f"DROP DATABASE IF EXISTS {self.template}"))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def _drop_unused(self) -> None:
        names, self._unused = self._unused, []
        self._drops.append(self._start(self._drop_all(names)))

    async def _drop_all(self, names: list[str]) -> None:
        await asyncio.gather(*(self._execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)") for name in names))

    async def _make_template(self, migrations: list[Migration]) -> None:
        await self._execute(f"CREATE DATABASE {self.template}")
        conn = await asyncpg.connect(with_database(self._server_url, self.template))
        try:
            await apply_migrations(conn, migrations)
        finally:
            await conn.close()
        # PostgreSQL copies a database only while nobody is connected to it: now nobody can be.
        await self._execute(f"ALTER DATABASE {self.template} ALLOW_CONNECTIONS false")

    async def _copy(self) -> str:
        name = f"conduit_test_{secrets.token_hex(6)}"
        await self._execute(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        return with_database(self._server_url, name)

    async def _execute(self, sql: str) -> None:
        conn = await asyncpg.connect(self._server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def _start(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._start(coro).result()
