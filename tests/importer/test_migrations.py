"""`conduit migrate` and the worker's start-up check that the database matches the module definitions."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from conduit.db_cli import MigrationError, apply_migrations, migrate, read_migrations
from services.importer.schema import SchemaMismatch, check_schema, create_table_sql
from shared.modules import catalogue
from tests.importer.conftest import MIGRATIONS, Database, drop_schema, fresh_schema

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


async def test_0006_partitions_snapshot_tables_by_tenant_keeping_rows_key_comment_and_grants(database_url: str) -> None:
    schema, url = await fresh_schema(database_url)
    try:
        conn = await asyncpg.connect(url)
        try:
            migrations = read_migrations(MIGRATIONS)
            await apply_migrations(conn, [m for m in migrations if m.version < "0006"])
            await conn.execute(
                "INSERT INTO stock_levels (tenant_id, item_id, warehouse_id, on_hand) "
                "VALUES ('acme', 1, 1, 5), ('acme', 2, 1, 7), ('globex', 1, 1, 6); "
                "GRANT SELECT ON stock_levels TO PUBLIC"
            )
            await apply_migrations(conn, migrations)

            rows = await conn.fetch(
                "SELECT tableoid::regclass::text AS part, tenant_id, item_id FROM stock_levels ORDER BY 2, 3"
            )
            assert [tuple(r) for r in rows] == [
                ('"stock_levels$acme"', "acme", 1),
                ('"stock_levels$acme"', "acme", 2),
                ('"stock_levels$globex"', "globex", 1),
            ]
            assert await conn.fetchval("SELECT relkind FROM pg_class WHERE oid = 'stock_levels'::regclass") == b"p"
            assert await conn.fetchval("SELECT has_table_privilege('public', 'stock_levels', 'SELECT')")
            assert "full snapshot" in await conn.fetchval("SELECT obj_description('stock_levels'::regclass)")
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "INSERT INTO stock_levels (tenant_id, item_id, warehouse_id, on_hand) VALUES ('acme', 1, 1, 9)"
                )
            await check_schema(conn, catalogue())
        finally:
            await conn.close()
    finally:
        await drop_schema(database_url, schema)


async def test_0009_partitions_every_other_module_table_keeping_rows_key_comment_and_grants(database_url: str) -> None:
    schema, url = await fresh_schema(database_url)
    try:
        conn = await asyncpg.connect(url)
        try:
            migrations = read_migrations(MIGRATIONS)
            await apply_migrations(conn, [m for m in migrations if m.version < "0009"])
            await conn.execute(
                "INSERT INTO transactions (tenant_id, transaction_id, account_code, amount, value_date) "
                "VALUES ('acme', 1, 'a', 1.50, '2024-05-01'), ('globex', 1, 'b', 2, '2024-05-01'); "
                "GRANT SELECT ON transactions TO PUBLIC"
            )
            await apply_migrations(conn, migrations)

            rows = await conn.fetch(
                "SELECT tableoid::regclass::text, tenant_id, amount::text FROM transactions ORDER BY 2"
            )
            assert [tuple(r) for r in rows] == [
                ('"transactions$acme"', "acme", "1.50"),
                ('"transactions$globex"', "globex", "2"),
            ]
            kinds = await conn.fetch(
                "SELECT t, (SELECT relkind FROM pg_class WHERE oid = to_regclass(t)) AS kind FROM unnest($1::text[]) t",
                [m.table_name for m in catalogue()],
            )
            assert {r["t"] for r in kinds if r["kind"] != b"p"} == set()
            assert await conn.fetchval("SELECT has_table_privilege('public', 'transactions', 'SELECT')")
            assert await conn.fetchval("SELECT obj_description('transactions'::regclass)")
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "INSERT INTO transactions (tenant_id, transaction_id, account_code, amount, value_date) "
                    "VALUES ('acme', 1, 'c', 3, '2024-05-02')"
                )
            await check_schema(conn, catalogue())
        finally:
            await conn.close()
    finally:
        await drop_schema(database_url, schema)


def test_ddl_of_every_module_is_partitioned_by_tenant() -> None:
    assert create_table_sql(catalogue().get("stock_levels")).split(";")[0].endswith(") PARTITION BY LIST (tenant_id)")
    assert create_table_sql(catalogue().get("invoice_lines")).split(";")[0].endswith(") PARTITION BY LIST (tenant_id)")
