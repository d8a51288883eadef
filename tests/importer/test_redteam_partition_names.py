"""Relation names derived from tenant ids (migrations/0006, swap.py): no two tenants' names may ever collide.

A snapshot module's partition is named after the tenant, and so was its key's index (``<partition>_pkey``,
cut to 58 characters by the swap). Tenant ids are the tenants file's (``NAME_PATTERN``: letters, digits,
``_ . -``, up to 64), so two tenants can share a long prefix, differ only in case, or one can be called
``<other>_pkey``. Generated sets of such tenants, each loaded by the swap or by the careful path (an empty
partition first) and then swapped again, must each end with their own rows and their own partition.

The SQL functions also take any text (quotes, ``%``, backslashes, multibyte characters, ids past 63
bytes): the tenants file refuses those, but a function that builds names must not depend on it.
"""

from __future__ import annotations

import itertools
import re

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conduit.db_cli import apply_migrations, read_migrations
from services.importer import swap
from services.importer.merge import MergePlan
from services.importer.schema import create_table_sql, quote
from services.importer.stats import Timings
from shared.modules import ModuleDef, catalogue
from shared.tenants import NAME_PATTERN
from tests.importer.conftest import MIGRATIONS, LoopDb, drop_schema, fresh_schema

_HYPOTHESIS = settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CURRENCIES = catalogue().get("currencies")
# Table names of every length an IDENTIFIER allows that matters: short, the digest's 30, the limit.
TABLES = ["t", "currencies", "c" * 30, "d" * 40, "e" * 63]
# Stems that put the part two names differ in past byte 58 (the index name's cut) or past byte 63.
_STEMS = ["acme", "acme-corporation-international-holdings-and-sons", "x" * 47, "y" * 52, "z" * 60]
_SUFFIXES = ["", "-01", "-02", "_pkey", "1_pkey", "_pke", ".1"]


@st.composite
def _tenant(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(_STEMS)) + draw(st.sampled_from(_SUFFIXES))
    if draw(st.booleans()):
        name = name.swapcase() if draw(st.booleans()) else name.capitalize()
    return name[:64]


_TENANTS = st.lists(_tenant(), min_size=2, max_size=4, unique=True)
_PATHS = st.lists(st.sampled_from(["swap", "careful"]), min_size=4, max_size=4)
_table_names = itertools.count()


def _module(table: str) -> ModuleDef:
    return CURRENCIES.model_copy(update={"table": table})


async def _swap(conn: asyncpg.Connection, module: ModuleDef, tenant: str, name: str) -> None:
    """One import of one row by the swap path, as the pipeline does it: a new table, filled, swapped in."""
    plan = MergePlan(module, [c.name for c in module.columns])
    async with conn.transaction():
        load = await swap.create_load_table(conn, module, tenant)
        await conn.execute(
            f"INSERT INTO {quote(load)} (tenant_id, code, name, decimals) VALUES ($1, 'AUD', $2, 2)", tenant, name
        )
        await swap.swap_in(conn, plan, tenant, Timings(), 1, None)


async def _careful(conn: asyncpg.Connection, module: ModuleDef, tenant: str, name: str) -> None:
    """One import by the careful path: the tenant's partition made empty if it has none, then a MERGE's insert."""
    async with conn.transaction():
        await swap.ensure_partition(conn, module, tenant)
        await conn.execute(
            f"INSERT INTO {quote(module.table_name)} (tenant_id, code, name, decimals) VALUES ($1, 'AUD', $2, 2) "
            "ON CONFLICT (tenant_id, code) DO UPDATE SET name = excluded.name",
            tenant,
            name,
        )


async def _every_tenant_twice(conn: asyncpg.Connection, table: str, tenants: list[str], paths: list[str]) -> None:
    module = _module(f"{table[:-4]}{next(_table_names):04}" if len(table) > 8 else f"{table}{next(_table_names)}")
    await conn.execute(create_table_sql(module))
    for day in (1, 2):
        for tenant, path in zip(tenants, paths, strict=False):
            load = _swap if day == 2 or path == "swap" else _careful
            await load(conn, module, tenant, f"{tenant} day {day}")
    rows = await conn.fetch(f"SELECT tenant_id, name FROM {quote(module.table_name)} ORDER BY tenant_id")
    assert sorted((r["tenant_id"], r["name"]) for r in rows) == sorted((t, f"{t} day 2") for t in tenants)
    # One partition per tenant holding only its rows, and nothing of the loads left behind.
    parts = await conn.fetch(
        "SELECT c.oid::regclass::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass($1)",
        quote(module.table_name),
    )
    assert len(parts) == len(tenants)
    for part in parts:
        assert await conn.fetchval(f"SELECT count(DISTINCT tenant_id) FROM {part['name']}") == 1
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE 'conduit\\_load\\_%'") == 0


@pytest.mark.timeout(300)
def test_tenants_the_tenants_file_allows_never_share_a_relation_name(loop_db: LoopDb) -> None:
    loop, conn = loop_db.loop, loop_db.conn

    @_HYPOTHESIS
    @given(table=st.sampled_from(TABLES), tenants=_TENANTS, paths=_PATHS)
    # The index name cut at 58 characters: two tenants that share their first 47 (after "currencies$").
    @example(
        table="currencies",
        tenants=[
            "acme-corporation-international-holdings-and-sons-01",
            "acme-corporation-international-holdings-and-sons-02",
        ],
        paths=["swap", "swap", "swap", "swap"],
    )
    # A tenant's partition named as another tenant's key index.
    @example(table="currencies", tenants=["acme", "acme_pkey"], paths=["swap", "swap", "swap", "swap"])
    @example(table="currencies", tenants=["acme_pkey", "acme"], paths=["careful", "careful", "swap", "swap"])
    @example(table="currencies", tenants=["acme", "acme_pkey"], paths=["careful", "careful", "swap", "swap"])
    @example(table="currencies", tenants=["Acme", "acme", "ACME"], paths=["swap", "careful", "swap", "swap"])
    def check(table: str, tenants: list[str], paths: list[str]) -> None:
        assert all(re.fullmatch(NAME_PATTERN, t) for t in tenants)
        loop.run_until_complete(_every_tenant_twice(conn, table, tenants, paths))

    check()


_HOSTILE = [
    "o'brien",
    'say "hi"',
    "50%",
    "%s%I%L",
    "back\\slash",
    "\\",
    "é" * 26,  # 52 bytes: "currencies$" and it is exactly 63
    "é" * 40,
    "日本" * 20,
    "a" * 200,
    "Ω$pkey",
    " lead",
    "trail ",
    "",
]


@pytest.mark.timeout(300)
def test_the_partition_functions_take_any_tenant_text(loop_db: LoopDb) -> None:
    loop, conn = loop_db.loop, loop_db.conn

    @_HYPOTHESIS
    @given(
        tenants=st.lists(
            st.one_of(st.sampled_from(_HOSTILE), st.text(st.characters(exclude_characters="\x00"), max_size=70)),
            min_size=2,
            max_size=4,
            unique=True,
        ),
        paths=_PATHS,
    )
    @example(tenants=["é" * 26, "é" * 27], paths=["swap", "swap", "swap", "swap"])
    @example(tenants=["back\\slash", "o'brien"], paths=["careful", "swap", "swap", "swap"])
    @example(tenants=["back\\slash", "o'brien"], paths=["swap", "swap", "swap", "swap"])
    def check(tenants: list[str], paths: list[str]) -> None:
        loop.run_until_complete(_every_tenant_twice(conn, "currencies", tenants, paths))

    check()


async def test_partitions_made_before_0007_get_names_of_their_own(database_url: str) -> None:
    """0007 renames the partitions (and keys) 0006 and the imports made, reading each tenant from its bound."""
    schema, url = await fresh_schema(database_url)
    conn = await asyncpg.connect(url)
    tenants = ["acme", "acme_pkey", "o'brien", "back\\slash", "é" * 26, "x" * 60, "Acme"]
    try:
        migrations = read_migrations(MIGRATIONS)
        await apply_migrations(conn, [m for m in migrations if m.version <= "0006"])
        for tenant in tenants[2:]:
            await conn.execute("SELECT conduit_add_tenant_partition('currencies', $1)", tenant)
        await conn.execute("SELECT conduit_add_tenant_partition('currencies', 'acme')")
        for tenant in tenants[2:] + ["acme"]:
            await conn.execute(
                "INSERT INTO currencies (tenant_id, code, name, decimals) VALUES ($1, 'AUD', $1, 2)", tenant
            )
        await apply_migrations(conn, migrations)

        names = await conn.fetch(
            "SELECT c.relname AS part, k.indexrelid::regclass::text AS key, "
            "conduit_tenant_partition_name('currencies', p.tenant_id) AS want_part, "
            "quote_ident(conduit_tenant_key_name('currencies', p.tenant_id)) AS want_key "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_index k ON k.indrelid = c.oid "
            "CROSS JOIN LATERAL (SELECT tenant_id FROM currencies WHERE tableoid = c.oid) p "
            "WHERE i.inhparent = 'currencies'::regclass"
        )
        assert len(names) == len(tenants) - 1
        assert all((r["part"], r["key"]) == (r["want_part"], r["want_key"]) for r in names), names
        # Every tenant, the two 0006 could not have held beside the others too, now swaps.
        for tenant in tenants:
            await _swap(conn, CURRENCIES, tenant, "new")
        rows = await conn.fetch("SELECT tenant_id, name FROM currencies")
        assert sorted((r["tenant_id"], r["name"]) for r in rows) == sorted((t, "new") for t in tenants)
    finally:
        await conn.close()
        await drop_schema(database_url, schema)
