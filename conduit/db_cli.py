"""`conduit migrate`: apply the SQL migrations in ``migrations/`` to ``CONDUIT_DATABASE_URL``.

A small runner rather than a migration library: the migrations are plain SQL
files, Conduit talks to PostgreSQL through asyncpg only (yoyo and alembic would
each bring a second driver), and what is needed fits in a screen:

- files ``NNNN_name.sql`` run in order, each in its own transaction, and are
  recorded in ``schema_migrations`` with a checksum;
- the whole run holds a PostgreSQL advisory lock, so the Helm hook, compose's
  one-shot service and an operator can all run it at once and each migration
  still runs exactly once;
- a migration edited after it was applied stops the run: history is append-only.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import asyncpg

# Any constant works; this one spells "conduit" so it is recognisable in pg_locks.
MIGRATION_LOCK = 0x636F6E64756974
_FILE = re.compile(r"^(\d{4,})_([a-z0-9_]+)\.sql$")
_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """A migration cannot be applied; the message names the file."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def read_migrations(directory: Path) -> list[Migration]:
    """The migrations in ``directory``, in version order; any other ``.sql`` name is an error."""
    if not directory.is_dir():
        raise MigrationError(f"{directory}: no migrations directory (run from the project root, or pass --dir)")
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(match.group(1), match.group(2), path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migrations share a version number")
    return found


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply what is not applied yet, under the advisory lock; returns the migrations applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(_TABLE)
        applied = {
            r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        done = []
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name}.sql was changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            await _apply(conn, migration)
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    # Imported here: `conduit` registers every command at start, and `conduit proxy` never talks to PostgreSQL.
    import asyncpg

    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"migration {migration.version}_{migration.name}.sql failed: {exc}") from None


async def migrate(dsn: str, directory: Path, wait: float = 30.0) -> list[Migration]:
    """Connect (waiting up to ``wait`` seconds for a server that is starting) and apply the migrations."""
    from shared.db import create_pool_with_retry

    migrations = read_migrations(directory)
    pool = await create_pool_with_retry(dsn, wait, min_size=1, max_size=1, application_name="conduit-migrate")
    try:
        async with pool.acquire() as conn:
            return await apply_migrations(conn, migrations)
    finally:
        await pool.close()


@click.command("migrate")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("migrations"),
    envvar="CONDUIT_MIGRATIONS_DIR",
    show_default=True,
    help="Directory of NNNN_name.sql files.",
)
@click.option("--wait", default=30.0, show_default=True, help="Seconds to wait for the database to accept connections.")
def migrate_command(directory: Path, wait: float) -> None:
    """Apply the SQL migrations to CONDUIT_DATABASE_URL (safe to run from several places at once)."""
    from conduit.cli_support import guard, reaching_postgres
    from shared.db import DatabaseSettings
    from shared.logging import configure_logging
    from shared.settings import CommonSettings

    # Guarded like every command's settings: an invalid one is a line naming it, not a traceback.
    common, dsn = guard(lambda: (CommonSettings(), DatabaseSettings().database_url))
    configure_logging(common.log_level, common.log_json)
    try:
        with reaching_postgres(dsn):
            done = asyncio.run(migrate(dsn, directory, wait))
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    for migration in done:
        click.echo(f"applied {migration.version}_{migration.name}")
    click.echo(f"database is at version {done[-1].version}" if done else "nothing to apply: the database is up to date")
