"""The lock that keeps one merge at a time per tenant and table (pipeline.lock_tenant_rows)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.importer.pipeline import lock_tenant_rows
from tests.importer.conftest import drop_schema, fresh_schema


@pytest.fixture
async def two_schemas(database_url: str) -> AsyncIterator[list[str]]:
    """Two schemas, each with its own `transactions` table: two deployments sharing one database."""
    made = [await fresh_schema(database_url) for _ in range(2)]
    try:
        for _, url in made:
            conn = await asyncpg.connect(url)
            await conn.execute("CREATE TABLE transactions (id int)")
            await conn.close()
        yield [url for _, url in made]
    finally:
        for schema, _ in made:
            await drop_schema(database_url, schema)


async def _holds_at_once(first_url: str, second_url: str, tenants: tuple[str, str]) -> bool:
    """Whether a second import's lock is granted while a first one holds its own (lock_timeout: refused)."""
    first, second = await asyncpg.connect(first_url), await asyncpg.connect(second_url)
    try:
        async with first.transaction():
            await lock_tenant_rows(first, "transactions", tenants[0])
            await second.execute("SET lock_timeout = '1s'")
            try:
                async with second.transaction():
                    await lock_tenant_rows(second, "transactions", tenants[1])
            except asyncpg.exceptions.LockNotAvailableError:
                return False
            return True
    finally:
        await first.close()
        await second.close()


async def test_the_same_table_and_tenant_wait_for_each_other(two_schemas: list[str]) -> None:
    assert not await _holds_at_once(two_schemas[0], two_schemas[0], ("acme", "acme"))


async def test_other_tenants_and_other_schemas_do_not_wait(two_schemas: list[str]) -> None:
    assert await _holds_at_once(two_schemas[0], two_schemas[0], ("acme", "globex"))
    # Fails when the lock is named by module and tenant only: deployments in two schemas then queue.
    assert await _holds_at_once(two_schemas[0], two_schemas[1], ("acme", "acme"))
