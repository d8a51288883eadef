"""`conduit migrate` and the worker's start-up check that the database matches the module definitions."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from conduit.db_cli import MigrationError, apply_migrations, migrate, read_migrations
from services.importer.schema import SchemaMismatch, check_schema, create_table_sql
from shared.modules import catalogue
from tests.importer.conftest import MIGRATIONS, Database, drop_schema, fresh_schema
from tests.importer.migrated_databases import MigratedDatabases

CONDUIT = str(Path(sys.executable).with_name("conduit"))


async def test_concurrent_migrate_runs_apply_each_migration_once(database_url: str) -> None:
    schema, url = await fresh_schema(database_url)
    try:
        results = await asyncio.gather(*(migrate(url, MIGRATIONS) for _ in range(3)))
        applied = sorted(m.version for done in results for m in done)
        assert applied == [m.version for m in read_migrations(MIGRATIONS)]
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(applied)
            await check_schema(conn, catalogue())
        finally:
            await conn.close()
    finally:
        await drop_schema(database_url, schema)


async def test_a_migration_edited_after_it_ran_stops_the_run(db: Database, tmp_path: Path) -> None:
    for path in MIGRATIONS.glob("*.sql"):
        (tmp_path / path.name).write_text(path.read_text() + ("\n-- edited" if path.name.startswith("0001") else ""))
    async with db.pool.acquire() as conn:
        with pytest.raises(MigrationError, match="0001_import_ledger.sql was changed after it was applied"):
            await apply_migrations(conn, read_migrations(tmp_path))


def test_migration_files_must_be_numbered(tmp_path: Path) -> None:
    (tmp_path / "create_things.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        read_migrations(tmp_path)


def test_the_cli_migrates_and_says_so(database_url: str) -> None:
    schema, url = asyncio.run(fresh_schema(database_url))
    try:
        env = {"CONDUIT_DATABASE_URL": url, "PATH": "/usr/bin:/bin", "CONDUIT_LOG_JSON": "true"}
        first = subprocess.run([CONDUIT, "migrate", "--dir", str(MIGRATIONS)], env=env, capture_output=True, text=True)
        again = subprocess.run([CONDUIT, "migrate", "--dir", str(MIGRATIONS)], env=env, capture_output=True, text=True)
    finally:
        asyncio.run(drop_schema(database_url, schema))
    assert first.returncode == 0, first.stderr
    assert "applied 0001_import_ledger" in first.stdout and "database is at version" in first.stdout
    assert again.returncode == 0 and "nothing to apply" in again.stdout


async def test_every_shipped_module_has_its_table(db: Database) -> None:
    async with db.pool.acquire() as conn:
        await check_schema(conn, catalogue())


async def test_a_mismatch_names_the_module_and_the_column(db: Database) -> None:
    await db.pool.execute(
        "ALTER TABLE contacts ALTER COLUMN birthday TYPE text; ALTER TABLE items DROP COLUMN sku; "
        "ALTER TABLE users ADD COLUMN nickname text; DROP TABLE tickets; "
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL; ALTER TABLE notes ALTER COLUMN tenant_id DROP DEFAULT; "
        "ALTER TABLE transactions ALTER COLUMN amount TYPE numeric(12,2)"
    )
    async with db.pool.acquire() as conn:
        with pytest.raises(SchemaMismatch) as err:
            await check_schema(conn, catalogue())
    message = str(err.value)
    assert "module 'contacts' (table contacts): column 'birthday' is text in the database but date" in message
    assert "module 'items' (table items): column 'sku' is missing from the table" in message
    assert "module 'users' (table users): column 'nickname' is in the table but not in the definition" in message
    assert "module 'users' (table users): column 'email' is NOT NULL in the database but not required" in message
    assert "module 'tickets' (table tickets): the table does not exist" in message
    assert "module 'notes' (table notes): column 'tenant_id' must default to current_setting" in message
    # Found at fb54f9a: a numeric with a precision passed, and each import rounded after comparing.
    assert "module 'transactions' (table transactions): column 'amount' is numeric(12,2) in the database" in message


def test_ddl_for_a_module() -> None:
    ddl = create_table_sql(catalogue().get("invoice_lines"))
    assert ddl.startswith(
        "CREATE TABLE \"invoice_lines\" (\n    tenant_id text NOT NULL DEFAULT current_setting('conduit.tenant_id'),\n"
    )
    assert '"line_no" integer NOT NULL' in ddl and '"description" text,' in ddl
    assert 'PRIMARY KEY (tenant_id, "invoice_id", "line_no")' in ddl


async def test_the_worker_refuses_to_start_naming_module_and_column(
    db: Database, tmp_path: Path, redis_url: str
) -> None:
    from tests.importer.conftest import write_tenants

    await db.pool.execute("ALTER TABLE invoices DROP COLUMN currency")
    env = {
        "PATH": os.environ["PATH"],
        "CONDUIT_DATABASE_URL": db.url,
        "CONDUIT_TENANTS_FILE": str(write_tenants(tmp_path)),
        "CONDUIT_TOKEN_KEY": "bnl4ZnBuY3ZuY3ZubmN2bm5jdm5uY3ZubmN2bm5jdm4=",
        "CONDUIT_IMPORTER_HTTP_PORT": "0",
        "CONDUIT_REDIS_URL": redis_url,
    }
    proc = await asyncio.create_subprocess_exec(
        CONDUIT, "importer", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1
    assert "module 'invoices' (table invoices): column 'currency' is missing from the table" in err.decode()
    assert "Traceback" not in err.decode()


# A migration that partitions module tables by tenant, a table it partitions, rows put in before it (a key of
# acme's written again is refused after), and what the table holds after it, read back as text.
_PARTITIONING = {
    "0006": (
        "stock_levels",
        "(tenant_id, item_id, warehouse_id, on_hand) VALUES ('acme', 1, 1, 5), ('acme', 2, 1, 7), ('globex', 1, 1, 6)",
        "(tenant_id, item_id, warehouse_id, on_hand) VALUES ('acme', 1, 1, 9)",
        "item_id::text",
        [
            ('"stock_levels$acme"', "acme", "1"),
            ('"stock_levels$acme"', "acme", "2"),
            ('"stock_levels$globex"', "globex", "1"),
        ],
    ),
    "0009": (
        "transactions",
        "(tenant_id, transaction_id, account_code, amount, value_date) "
        "VALUES ('acme', 1, 'a', 1.50, '2024-05-01'), ('globex', 1, 'b', 2, '2024-05-01')",
        "(tenant_id, transaction_id, account_code, amount, value_date) VALUES ('acme', 1, 'c', 3, '2024-05-02')",
        "amount::text",
        [('"transactions$acme"', "acme", "1.50"), ('"transactions$globex"', "globex", "2")],
    ),
}


@pytest.mark.parametrize("version", sorted(_PARTITIONING))
async def test_a_partitioning_migration_keeps_rows_key_comment_and_grants(database_url: str, version: str) -> None:
    table, rows, again, value, expected = _PARTITIONING[version]
    schema, url = await fresh_schema(database_url)
    try:
        conn = await asyncpg.connect(url)
        try:
            migrations = read_migrations(MIGRATIONS)
            await apply_migrations(conn, [m for m in migrations if m.version < version])
            comment = await conn.fetchval("SELECT obj_description($1::regclass)", table)
            await conn.execute(f"INSERT INTO {table} {rows}; GRANT SELECT ON {table} TO PUBLIC")
            await apply_migrations(conn, migrations)

            got = await conn.fetch(f"SELECT tableoid::regclass::text, tenant_id, {value} FROM {table} ORDER BY 2, 3")
            assert [tuple(r) for r in got] == expected
            assert await conn.fetchval("SELECT relkind FROM pg_class WHERE oid = $1::regclass", table) == b"p"
            assert await conn.fetchval("SELECT has_table_privilege('public', $1, 'SELECT')", table)
            assert comment and await conn.fetchval("SELECT obj_description($1::regclass)", table) == comment
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(f"INSERT INTO {table} {again}")
            unpartitioned = await conn.fetch(
                "SELECT t FROM unnest($1::text[]) t "
                "WHERE (SELECT relkind FROM pg_class WHERE oid = to_regclass(t)) <> 'p'",
                [m.table_name for m in catalogue()],
            )
            assert unpartitioned == []  # after 0009, every module's table
            await check_schema(conn, catalogue())
        finally:
            await conn.close()
    finally:
        await drop_schema(database_url, schema)


def test_ddl_of_every_module_is_partitioned_by_tenant() -> None:
    assert create_table_sql(catalogue().get("stock_levels")).split(";")[0].endswith(") PARTITION BY LIST (tenant_id)")
    assert create_table_sql(catalogue().get("invoice_lines")).split(";")[0].endswith(") PARTITION BY LIST (tenant_id)")


# What the migrations leave in a schema, as text that does not name the schema.
_SHAPE = (
    "SELECT 'column', c.relname || '.' || a.attname || ' ' || c.relkind::text || ' '"
    " || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' '"
    " || coalesce(pg_get_expr(d.adbin, d.adrelid), '')"
    " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    " LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (c.oid, a.attnum)"
    " WHERE c.relnamespace = current_schema()::regnamespace"
    " UNION ALL SELECT 'constraint', conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)"
    " FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"
    " UNION ALL SELECT 'function', proname || '(' || pg_get_function_identity_arguments(oid) || ') ' || md5(prosrc)"
    " FROM pg_proc WHERE pronamespace = current_schema()::regnamespace"
    " UNION ALL SELECT 'comment', c.relname || ' ' || coalesce(obj_description(c.oid, 'pg_class'), '')"
    " FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
    " UNION ALL SELECT 'migration', version || ' ' || checksum FROM schema_migrations"
)


async def test_a_tests_database_holds_what_migrating_a_schema_makes(db: Database, database_url: str) -> None:
    """Tests get copies of one template migrated once (migrated_databases.py): the copy must hold what
    migrating a schema of its own makes, table by table, column by column, key, function and comment."""
    schema, url = await fresh_schema(database_url)
    try:
        conn = await asyncpg.connect(url)
        try:
            await apply_migrations(conn, read_migrations(MIGRATIONS))
            migrated = sorted(tuple(r) for r in await conn.fetch(_SHAPE))
        finally:
            await conn.close()
    finally:
        await drop_schema(database_url, schema)
    copied = sorted(tuple(r) for r in await db.pool.fetch(_SHAPE))
    assert len(migrated) > 500
    assert copied == migrated


def test_each_copy_is_a_database_of_its_own_and_is_dropped(database_url: str) -> None:
    databases = MigratedDatabases(database_url, read_migrations(MIGRATIONS))
    names = [databases.template]
    try:
        first, second = databases.create(), databases.create()
        names += [urlsplit(first).path[1:], urlsplit(second).path[1:]]

        async def write_one_read_other() -> int:
            one, other = await asyncpg.connect(first), await asyncpg.connect(second)
            try:
                await one.execute("SELECT conduit_add_tenant_partition('users', 'acme')")
                await one.execute("INSERT INTO users (tenant_id, user_id, login) VALUES ('acme', 1, 'a')")
                return int(await other.fetchval("SELECT count(*) FROM users"))
            finally:
                await one.close()
                await other.close()

        assert asyncio.run(write_one_read_other()) == 0
        databases.drop(first)
        databases.drop(second)
    finally:
        databases.close()

    async def left() -> list[str]:
        conn = await asyncpg.connect(database_url)
        try:
            return [r[0] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname = ANY($1)", names)]
        finally:
            await conn.close()

    assert asyncio.run(left()) == []
