"""A module that keeps missing rows leaves the same table and ledger whichever way its daily file goes in.

Differential against a model and across paths, in the real PostgreSQL: a tenant's stored rows and a day's file
(keys that are new, changed, written otherwise, unchanged, or missing from the file) are generated, and the
file is imported by every way swap.py and the pipeline have for it, each as a tenant of its own seeded alike:
as shipped (its own choice of way checked too), written in place (few changes), swapped with the missing
rows carried over, MERGEd in (a file small against the partition), staged and MERGEd (the fast path for a
file that cannot swap), and the careful path. All must leave exactly the model's rows (the file's row wins,
every other stored row kept) and count the same. Then what readers see while rows are carried over: the old
rows or the new, whole, never a mix; and a swap of few changes that would queue them does not wait.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.importer import swap
from services.importer.schema import create_table_sql
from services.importer.settings import ImporterSettings
from shared.modules import catalogue
from tests.importer.conftest import DB_EXAMPLES, Database, LoopDb
from tests.importer.test_csv_paths import _drop_partitions, _import

_FULL = catalogue().get("transactions")
MODULE = _FULL.model_copy(
    update={
        "columns": [c for c in _FULL.columns if c.name in ("transaction_id", "account_code", "amount", "value_date")],
        "table": "keep_paths",
        "missing_rows": "keep",
    }
)
HEADER = "Transaction ID,account_code,amount,value_date"
_tenants = itertools.count()

_ROW = st.tuples(
    st.sampled_from(["a", "b", "ü"]),
    st.sampled_from(["1", "1.0", "1.00", "2", "-3.5"]),  # 1.0 against 1: equal numbers stored otherwise
    st.sampled_from(["2024-05-01", "2024-05-02"]),
)


@st.composite
def days(draw: st.DrawFn) -> tuple[dict[int, tuple[str, str, str]], dict[int, tuple[str, str, str]]]:
    """Stored rows and the file's, by key: the file may hold any of the stored keys, again or otherwise, and new."""
    stored = draw(st.dictionaries(st.integers(1, 40), _ROW, min_size=1, max_size=30))
    kept = draw(st.lists(st.sampled_from(sorted(stored)), unique=True))
    file = {k: draw(st.sampled_from([stored[k], draw(_ROW)])) for k in kept}
    file |= draw(st.dictionaries(st.integers(41, 60), _ROW, max_size=10))
    if not file:
        file = {61: draw(_ROW)}
    return stored, file


# Each way: how the pipeline is made to take it, and the ledger's path for it (None: as the day decides it).
_WAYS = {
    "as shipped": ([], None),
    "in place": (
        [
            mock.patch.object(swap, "in_place_limit", lambda rows: 10**9),
            mock.patch.object(swap, "writes_in_place", lambda changes: True),
        ],
        "fast",
    ),
    "swap": ([mock.patch.object(swap, "in_place_limit", lambda rows: -1)], "swap"),
    "swap, carried through a file": (
        [mock.patch.object(swap, "in_place_limit", lambda rows: -1), mock.patch.object(swap, "_CARRY_MEMORY", 64)],
        "swap",
    ),
    "merge in": ([mock.patch.object(swap, "_merges_in", mock.AsyncMock(return_value=True))], "fast"),
    "staged": ([mock.patch.object(swap, "can_swap", lambda module, layout: False)], "fast"),
    "careful": ([], "careful: the fast path is off (IMPORTER_FAST_PATH)"),
}


@contextmanager
def _way(name: str) -> Iterator[None]:
    with ExitStack() as stack:
        for patch in _WAYS[name][0]:
            stack.enter_context(patch)
        yield


async def _seed(conn: asyncpg.Connection, tenant: str, stored: dict[int, tuple[str, str, str]]) -> None:
    await conn.execute("SELECT conduit_add_tenant_partition($1, $2)", MODULE.table_name, tenant)
    await conn.executemany(
        f"INSERT INTO {MODULE.table_name} (tenant_id, transaction_id, account_code, amount, value_date) "
        "VALUES ($1, $2, $3, $4::numeric, $5::date)",
        [(tenant, k, code, amount, dt.date.fromisoformat(day)) for k, (code, amount, day) in stored.items()],
    )


async def _outcome(conn: asyncpg.Connection, config: ImporterSettings, data: bytes, tenant: str) -> dict[str, Any]:
    outcome = await _import(conn, config, data, tenant, MODULE)
    outcome["table"] = [
        tuple(r)
        for r in await conn.fetch(
            f"SELECT transaction_id, account_code, amount::text, value_date::text FROM {MODULE.table_name} "
            "WHERE tenant_id = $1 ORDER BY transaction_id",
            tenant,
        )
    ]
    return outcome


async def compare(
    conn: asyncpg.Connection,
    config: ImporterSettings,
    stored: dict[int, tuple[str, str, str]],
    file: dict[int, tuple[str, str, str]],
) -> None:
    if await conn.fetchval("SELECT to_regclass($1)", MODULE.table_name) is None:
        await conn.execute(create_table_sql(MODULE))
    data = "\n".join([HEADER, *(f"{k},{c},{a},{d}" for k, (c, a, d) in file.items())]).encode() + b"\n"
    n = next(_tenants)
    outcomes: dict[str, dict[str, Any]] = {}
    for way in _WAYS:
        tenant = f"t{n}-{way}"
        await _seed(conn, tenant, stored)
        with _way(way):
            careful = config.model_copy(update={"importer_fast_path": way != "careful"})
            outcomes[way] = await _outcome(conn, careful, data, tenant)
    await _drop_partitions(conn, MODULE)
    model = {k: (k, c, a, d) for k, (c, a, d) in (stored | file).items()}
    changed = sum(1 for k, row in file.items() if stored.get(k) != row)
    for way, outcome in outcomes.items():
        assert outcome["status"] == "succeeded", f"{way}: {outcome}"
        # As shipped, a day of few changes is written in place, unless the file holds every stored row: then
        # the new table is whole already and swapped in.
        path = _WAYS[way][1] or ("swap" if changed and stored.keys() <= file.keys() else "fast")
        assert outcome["parse_path"] == path, f"{way} took another path: {outcome['parse_path']}"
        table = [(k, c, a, d) for k, c, a, d in outcome["table"]]
        assert table == [model[k] for k in sorted(model)], f"{way} left another table for {stored} + {file}"
        counts = (outcome["rows_imported"], outcome["rows_changed"], outcome["rows_deleted"])
        assert counts == (len(file), changed, 0), f"{way} counted {counts} for {stored} + {file}"


@pytest.mark.timeout(300)
def test_every_way_of_writing_a_day_into_a_module_that_keeps_rows_leaves_the_models_table(
    loop_db: LoopDb, database_url: str, tmp_path: Path
) -> None:
    config = ImporterSettings(database_url=database_url, importer_temp_dir=tmp_path, importer_copy_chunk_rows=3)

    @settings(DB_EXAMPLES, max_examples=40)
    @given(day=days())
    # Every stored row missing from the file, one row written otherwise (1.0 for 1), one new.
    @example(
        day=(
            {1: ("a", "1", "2024-05-01"), 2: ("b", "2", "2024-05-01")},
            {1: ("a", "1.0", "2024-05-01"), 41: ("a", "2", "2024-05-02")},
        )
    )
    def check(day: tuple[dict[int, tuple[str, str, str]], dict[int, tuple[str, str, str]]]) -> None:
        loop_db.run(compare(loop_db.conn, config, *day))

    check()


async def test_a_snapshot_older_than_the_swap_sees_the_carried_rows_with_the_files(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    """A REPEATABLE READ reader whose snapshot predates the swap, reading after it, gets the new rows whole: the
    carried rows are frozen as the file's are (an INSERT's would be invisible to it: the file's rows alone)."""
    config = ImporterSettings(database_url=database_url, importer_temp_dir=tmp_path)
    stored = {1: ("a", "1", "2024-05-01"), 2: ("b", "2", "2024-05-01"), 3: ("c", "3", "2024-05-01")}
    async with db.pool.acquire() as conn, db.pool.acquire() as reader:
        await conn.execute(create_table_sql(MODULE))
        await _seed(conn, "acme", stored)
        async with reader.transaction(isolation="repeatable_read"):
            await reader.fetchval("SELECT count(*) FROM import_runs")  # the snapshot is taken here
            with _way("swap"):
                outcome = await _outcome(
                    conn, config, f"{HEADER}\n1,a,5,2024-05-01\n4,d,4,2024-05-01\n".encode(), "acme"
                )
            assert outcome["parse_path"] == "swap" and outcome["table"][1] == (2, "b", "2", "2024-05-01")
            seen = await reader.fetch(f"SELECT transaction_id FROM {MODULE.table_name} ORDER BY 1")
    assert [r[0] for r in seen] == [1, 2, 3, 4]


async def test_a_file_of_a_small_part_of_the_tenants_rows_is_merged_in_and_a_large_one_is_not(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    """An export of the day's changes (10 rows against 3,000) is MERGEd in: a swap would copy the 2,990 rows it
    lacks. An export of about everything is not."""
    config = ImporterSettings(database_url=database_url, importer_temp_dir=tmp_path)
    stored = {k: ("a", "1", "2024-05-01") for k in range(1, 3001)}
    small = "\n".join([HEADER, *(f"{k},b,2,2024-05-01" for k in range(1, 11))]).encode() + b"\n"
    large = "\n".join([HEADER, *(f"{k},a,1,2024-05-01" for k in range(1, 2001))]).encode() + b"\n"
    async with db.pool.acquire() as conn:
        await conn.execute(create_table_sql(MODULE))
        for tenant, data in (("small", small), ("large", large)):
            await _seed(conn, tenant, stored)
            with mock.patch.object(swap, "merge_table", wraps=swap.merge_table) as merged:
                outcome = await _outcome(conn, config, data, tenant)
            assert merged.called == (tenant == "small"), tenant
            assert outcome["rows_changed"] == (10 if tenant == "small" else 0)
            assert len(outcome["table"]) == 3000


async def test_a_reader_sees_the_old_rows_or_the_new_with_the_carried_ones_never_a_mix(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    """While a swap carries 500 rows the file lacks into the new table, a reader polling the tenant's rows sees
    yesterday's 3,000 (all `a`), then today's (500 carried `a`, 3,000 `b`), and nothing in between."""
    config = ImporterSettings(database_url=database_url, importer_temp_dir=tmp_path)
    stored = {k: ("a", "1", "2024-05-01") for k in range(1, 3001)}
    data = "\n".join([HEADER, *(f"{k},b,2,2024-05-02" for k in range(501, 3501))]).encode() + b"\n"
    old, new = (3000, 3000, 0), (3500, 500, 3000)
    count = (
        "SELECT count(*), count(*) FILTER (WHERE account_code = 'a'), count(*) FILTER (WHERE account_code = 'b') "
        f"FROM {MODULE.table_name}"
    )
    seen: list[tuple[int, int, int]] = []
    done = asyncio.Event()
    async with db.pool.acquire() as conn, db.pool.acquire() as reader:
        await conn.execute(create_table_sql(MODULE))
        await _seed(conn, "acme", stored)

        async def read() -> None:
            while not done.is_set():
                seen.append(tuple(await reader.fetchrow(count)))
            seen.append(tuple(await reader.fetchrow(count)))

        polling = asyncio.create_task(read())
        try:
            with _way("swap"):
                outcome = await _outcome(conn, config, data, "acme")
        finally:
            done.set()
            await polling
    assert outcome["parse_path"] == "swap"
    assert set(seen) == {old, new}, set(seen)
    assert seen[0] == old and seen[-1] == new and all(s == new for s in seen[seen.index(new) :])


async def test_few_changed_rows_go_in_place_rather_than_queue_the_modules_readers_behind_a_swap(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    """A full export with one row changed is swapped in, unless a query holds the module's table: waiting for
    the swap's lock would queue every query on the table (each tenant's) until that one ends, so after
    IMPORTER_SWAP_LOCK_WAIT the row is written in place instead. Once the table is free, the swap again."""
    config = ImporterSettings(database_url=database_url, importer_temp_dir=tmp_path, importer_swap_lock_wait=0.1)
    stored = {k: ("a", "1", "2024-05-01") for k in range(1, 101)}

    def day(code: str) -> bytes:
        rows = (f"{k},{code if k == 1 else 'a'},1,2024-05-01" for k in range(1, 101))
        return "\n".join([HEADER, *rows]).encode() + b"\n"

    async with db.pool.acquire() as conn, db.pool.acquire() as reader:
        await conn.execute(create_table_sql(MODULE))
        await _seed(conn, "acme", stored)
        async with reader.transaction():
            await reader.fetchval(f"SELECT count(*) FROM {MODULE.table_name}")  # its lock is held until the end
            busy = await asyncio.wait_for(_outcome(conn, config, day("b"), "acme"), 30)
        free = await _outcome(conn, config, day("c"), "acme")
    assert (busy["parse_path"], busy["rows_changed"], busy["table"][0]) == ("fast", 1, (1, "b", "1", "2024-05-01"))
    assert (free["parse_path"], free["rows_changed"], free["table"][0]) == ("swap", 1, (1, "c", "1", "2024-05-01"))
    assert len(free["table"]) == 100
