"""A file that repeats a key, imported over a tenant's rows of yesterday: every path keeps the key's last copy.

PostgreSQL's MERGE refuses a key twice only when both copies would modify the
target row; ``WHEN MATCHED AND <rows differ>`` passes over a copy equal to the
stored row, so a file holding key K once as stored and once changed merged
without an error, the changed copy winning wherever it stood, and no duplicate
counted. The careful path's rule is that the last copy wins, counted in
``rows_duplicate`` (merge._sort_out).

Each generated file (keys seeded or new, each copy as stored, changed, or with a
value the column refuses, in any order) is imported by the fast path and the
careful path into tables seeded alike, for four kinds of module: a plain table
that deletes missing rows, one that keeps them, a table partitioned by tenant
that keeps them (no swap: the fast path's MERGE), and one that deletes them
(the swap, whose primary key refuses a key twice). Both paths must leave the
table the rule's model says (the last copy that fits wins) and agree on the
ledger's counts and rejects. The model, not only the other path, is the
reference: the careful path tried the same MERGE first, so it was wrong alike.

A tenant's first load (nothing seeded) is drawn too: there the careful path COPYs the records it vouches for
straight into the table and merges only the doubtful ones (csv_route.py), so a key whose one copy went each
way met itself in the MERGE. A ``quoted`` copy is the stored one with its amount in quotes: equal once
cast, but doubted by the router, so it is merged onto its sure twin (on main, an equal copy was passed
over uncounted: the ledger said two rows imported, no duplicate, and the table held one).

The fix asks ``MergePlan.repeats_key`` before any MERGE of staged rows; a second
test holds its answer to the table's own primary key, for keys of one column and
of several (hashed), each type's values written in ways PostgreSQL reads as one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.importer.merge import STAGE, MergePlan
from services.importer.schema import create_table_sql
from services.importer.settings import ImporterSettings
from shared.modules import ModuleDef
from tests.importer.conftest import DB_EXAMPLES, LoopDb, drop_schema, fresh_schema
from tests.importer.test_csv_paths import HEADER, MODULE, _import, _swap_module

SEEDED = (1, 2, 3)  # keys 4 and 5 are new
_KINDS = ["stored", "quoted", "changed", "again", "bad"]
_COPIES = st.lists(st.tuples(st.integers(1, 5), st.sampled_from(_KINDS)), max_size=8)
_tenants = itertools.count()
Copy = tuple[int, str]


def _values(key: int, kind: str) -> tuple[str, str, str]:
    """account_code, amount, value_date of one copy of ``key``: as seeded, changed, or an amount that is no number."""
    return {
        "stored": (f"s{key}", f"{key}.50", "2020-01-01"),
        "quoted": (f"s{key}", f'"{key}.50"', "2020-01-01"),  # the stored copy, its amount doubted by the router
        "changed": (f"c{key}", f"{key}.5", "2024-05-01"),  # 1.5 for 1.50: equal numerics, stored otherwise
        "again": (f"a{key}", "7", "2024-05-01"),
        "bad": (f"b{key}", "x", "2024-05-01"),
    }[kind]


def _row(key: int, kind: str) -> tuple[str | None, ...]:
    account, amount, day = _values(key, kind)
    amount = amount.strip('"')
    return (str(key), account, None, None, amount, None, None, day, None, None)  # as test_csv_paths._import reads


def _file(copies: Sequence[Copy]) -> bytes:
    return HEADER + b"".join(f"\n{k},{','.join(_values(k, kind))}".encode() for k, kind in copies) + b"\n"


def _expected_table(module: ModuleDef, copies: Sequence[Copy], seeded: bool) -> list[tuple[str | None, ...]]:
    """The rule: the last copy of a key that fits wins; a run with rejects deletes nothing; too many fail it."""
    good = [(k, kind) for k, kind in copies if kind != "bad"]
    table = {k: _row(k, "stored") for k in SEEDED} if seeded else {}
    if len(copies) - len(good) > module.reject_threshold * len(copies) or not copies:
        return [table[k] for k in sorted(table)]
    last = dict(good)
    if module.missing_rows == "delete" and len(good) == len(copies):
        table = {k: v for k, v in table.items() if k in last}
    table.update({k: _row(k, kind) for k, kind in last.items()})
    return [table[k] for k in sorted(table)]


def _expected_counts(copies: Sequence[Copy], seeded: bool) -> dict[str, int]:
    """The ledger's counts of a run that succeeded: every copy but a key's last good one is a duplicate."""
    good = [(k, kind) for k, kind in copies if kind != "bad"]
    last = dict(good)
    changed = sum(1 for k, kind in last.items() if not seeded or k not in SEEDED or kind not in ("stored", "quoted"))
    return {"rows_rejected": len(copies) - len(good), "rows_duplicate": len(good) - len(last), "rows_changed": changed}


async def _seed(conn: asyncpg.Connection, module: ModuleDef, tenant: str) -> None:
    if await conn.fetchval("SELECT relkind FROM pg_class WHERE oid = to_regclass($1)", module.table_name) == b"p":
        await conn.execute("SELECT conduit_add_tenant_partition($1, $2)", module.table_name, tenant)
    await conn.executemany(
        f"INSERT INTO {module.table_name} (tenant_id, transaction_id, account_code, amount, value_date) "
        "VALUES ($1, $2, $3, $4::text::numeric, $5::text::date)",
        [(tenant, k, *_values(k, "stored")) for k in SEEDED],
    )


async def _partitioned_keep(conn: asyncpg.Connection) -> ModuleDef:
    """The file's columns in a table partitioned by tenant, keeping missing rows: no swap, the fast path's MERGE."""
    columns = [c for c in MODULE.columns if MODULE.is_required(c)]
    snapshot = MODULE.model_copy(update={"columns": columns, "table": "dup_keys_partitioned"})
    await conn.execute(create_table_sql(snapshot))
    return snapshot.model_copy(update={"missing_rows": "keep"})


async def _compare(
    conn: asyncpg.Connection, fast: ImporterSettings, module: ModuleDef, copies: list[Copy], seeded: bool
) -> None:
    careful = fast.model_copy(update={"importer_fast_path": False})
    data, n = _file(copies), next(_tenants)
    outcomes: dict[str, dict[str, Any]] = {}
    for name, config in (("fast", fast), ("careful", careful)):
        tenant = f"t{n}-{name}"
        if seeded:
            await _seed(conn, module, tenant)
        outcomes[name] = await _import(conn, config, data, tenant, module)
    expected = _expected_table(module, copies, seeded)
    for name, outcome in outcomes.items():
        path = outcome.pop("parse_path")
        assert outcome["table"] == expected, f"{name} ({path!r}, {module.missing_rows}) on {data!r}: {outcome}"
        if outcome["status"] != "failed":
            counts = {c: outcome[c] for c in _expected_counts(copies, seeded)}
            assert counts == _expected_counts(copies, seeded), f"{name} ({path!r}) counts on {data!r}: {outcome}"
    assert outcomes["fast"] == outcomes["careful"], f"the paths disagree on {data!r}: {outcomes}"


@pytest.mark.timeout(300)
def test_a_key_repeated_over_yesterdays_rows_keeps_its_last_copy_on_every_path(
    loop_db: LoopDb, database_url: str, tmp_path: Path
) -> None:
    config = ImporterSettings(database_url=database_url, importer_temp_dir=tmp_path, importer_copy_chunk_rows=3)
    keep = MODULE.model_copy(update={"missing_rows": "keep"})
    swap = loop_db.run(_swap_module(loop_db.conn, HEADER))
    modules = [MODULE, keep, loop_db.run(_partitioned_keep(loop_db.conn)), swap]

    @settings(DB_EXAMPLES, max_examples=40)
    @given(copies=_COPIES, which=st.sampled_from(range(len(modules))), seeded=st.booleans())
    # Found on main: the changed copy first, the stored one last; MERGE skipped the stored copy, kept the
    # changed one, and counted no duplicate (both paths: the careful one tried the same MERGE first).
    @example(copies=[(1, "changed"), (1, "stored")], which=0, seeded=True)
    @example(copies=[(1, "changed"), (1, "stored")], which=1, seeded=True)
    @example(copies=[(1, "changed"), (1, "stored")], which=2, seeded=True)
    # The stored copy first: the right row by chance, but the duplicate went uncounted.
    @example(copies=[(1, "stored"), (2, "again"), (1, "changed"), (4, "again")], which=1, seeded=True)
    # Found at fb54f9a: a first load's sure copy COPYed into the table, its doubted twin merged onto it
    # unseen (two rows imported, none duplicate, one stored), whichever came first.
    @example(copies=[(1, "stored"), (1, "quoted")], which=0, seeded=False)
    @example(copies=[(1, "quoted"), (1, "stored")], which=1, seeded=False)
    def check(copies: list[Copy], which: int, seeded: bool) -> None:
        loop_db.run(_compare(loop_db.conn, config, modules[which], copies, seeded))

    check()


# Key columns of each type, with texts PostgreSQL reads as one value (01 is 1, 1.00 is 1.0) and some it does not.
_KEY_TEXTS = {
    "bigint": ["1", "01", " 1", "2"],
    "numeric": ["1.0", "1.00", "1", "2"],
    "date": ["2024-05-01", "2024-5-1", "2024-05-02"],
    "text": ["a", "A", "a ", "é"],
}


async def _repeats_as_the_key_says(conn: asyncpg.Connection, types: list[str], keys: list[tuple[str, ...]]) -> None:
    """``repeats_key`` on the staged texts against the table's own primary key taking the cast rows or not."""
    names = [f"k{i}" for i in range(len(types))]
    columns = [{"name": n, "type": t} for n, t in zip(names, types, strict=True)]
    module = ModuleDef.model_validate({"name": "rk", "table": "rk", "key": names, "columns": columns})
    plan = MergePlan(module, names)
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(plan.create_stage())
        records = [(*key, i, i + 1) for i, key in enumerate(keys, 1)]
        await conn.copy_records_to_table(STAGE, records=records, columns=plan.copy_columns)
        repeats = await conn.fetchval(plan.repeats_key())
        typed = ", ".join(f"{n} {t}" for n, t in zip(names, types, strict=True))
        await conn.execute(f"CREATE TEMP TABLE keyed ({typed}, PRIMARY KEY ({', '.join(names)})) ON COMMIT DROP")
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO keyed SELECT {', '.join(plan.cast(n) for n in names)} FROM {STAGE}")
            refused = False
        except asyncpg.UniqueViolationError:
            refused = True
        assert repeats == refused, f"{types} {keys}: repeats_key says {repeats}, the primary key {refused}"
    finally:
        await tx.rollback()


@st.composite
def _staged_keys(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, ...]]]:
    types = draw(st.lists(st.sampled_from(sorted(_KEY_TEXTS)), min_size=1, max_size=3))
    key = st.tuples(*(st.sampled_from(_KEY_TEXTS[t]) for t in types))
    return types, draw(st.lists(key, min_size=1, max_size=6))


@pytest.mark.timeout(120)
def test_repeats_key_finds_what_the_primary_key_refuses(database_url: str) -> None:
    loop = asyncio.new_event_loop()
    schema, url = loop.run_until_complete(fresh_schema(database_url))
    conn = loop.run_until_complete(asyncpg.connect(url))
    try:

        @settings(DB_EXAMPLES, max_examples=200)
        @given(case=_staged_keys())
        # One key, and two columns hashed: the same values written otherwise are the same key.
        @example(case=(["bigint"], [("1",), ("01",)]))
        @example(case=(["bigint", "text"], [("1", "a"), ("01", "a"), ("1", "A")]))
        @example(case=(["numeric", "date"], [("1.0", "2024-05-01"), ("1.00", "2024-5-1")]))
        def check(case: tuple[list[str], list[tuple[str, ...]]]) -> None:
            loop.run_until_complete(_repeats_as_the_key_says(conn, *case))

        check()
    finally:
        loop.run_until_complete(conn.close())
        loop.run_until_complete(drop_schema(database_url, schema))
        loop.close()
