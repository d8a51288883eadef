"""A snapshot module's daily import swaps the tenant's partition (services/importer/swap.py, issue 12).

Counts as the MERGE gave them, other tenants untouched, nothing left behind; a reader never sees a mix
of two days; a worker killed, or PostgreSQL restarting, while the swap waits for its lock leaves the old
rows whole, and the retry the new ones.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from services.importer import swap
from services.importer.merge import MergePlan
from services.importer.schema import quote
from services.importer.stats import Timings
from shared.modules import catalogue
from tests.importer.conftest import Database, Importer
from tests.importer.support import Exports, export_body
from tests.importer.test_faults import private_postgres, restart_postgres, worker_process

__all__ = ["private_postgres"]  # a fixture of test_faults, used here too

HEAD = "code,name,decimals,symbol\n"
JOB = "import:acme:currencies:2024-05-02"


def day(symbol: str, count: int, start: int = 0) -> bytes:
    """``count`` currencies whose symbol is ``symbol``: each day's rows are told apart by it."""
    rows = "".join(f"C{i:05},Currency {i},2,{symbol}\n" for i in range(start, start + count))
    return export_body("currencies", HEAD + rows)


async def partitions(conn: asyncpg.Connection | asyncpg.Pool) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'currencies'::regclass ORDER BY 1"
    )
    return [r["relname"] for r in rows]


async def load_tables(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'conduit\\_load\\_%' AND relnamespace = "
        "current_schema()::regnamespace"
    )
    return count


async def state(conn: asyncpg.Connection | asyncpg.Pool, tenant: str = "acme") -> tuple[int, str | None, str | None]:
    row = await conn.fetchrow("SELECT count(*), min(symbol), max(symbol) FROM currencies WHERE tenant_id = $1", tenant)
    return (row[0], row[1], row[2])


async def test_a_snapshot_import_swaps_the_partition_counts_as_merge_did_and_leaves_others_alone(
    importer: Importer, exports: Exports
) -> None:
    exports.set("currencies", day("G", 50))
    await importer.run("globex", "currencies", "2024-05-01")
    exports.set("currencies", day("A", 100))
    await importer.run("acme", "currencies", "2024-05-01")
    # Day 2: rows 0-9 gone, 10-19 changed, 20-99 the same, 100-114 new.
    changed = HEAD + "".join(f"C{i:05},Currency {i},2,{'B' if i < 20 else 'A'}\n" for i in range(10, 115))
    exports.set("currencies", export_body("currencies", changed))
    await importer.run("acme", "currencies", "2024-05-02")

    runs = await importer.db.runs()
    assert [(r["tenant_id"], r["parse_path"], r["rows_changed"], r["rows_deleted"]) for r in runs] == [
        ("globex", "first load", 50, 0),
        ("acme", "first load", 100, 0),
        ("acme", "swap", 10 + 15, 10),
    ]
    assert await state(importer.db.pool) == (105, "A", "B")
    assert await state(importer.db.pool, "globex") == (50, "G", "G")
    assert await partitions(importer.db.pool) == ["currencies$acme", "currencies$globex"]
    assert await load_tables(importer.db.pool) == 0
    # The key and the tenant boundary hold on the new partition.
    with pytest.raises(asyncpg.UniqueViolationError):
        await importer.db.pool.execute(
            "INSERT INTO currencies (tenant_id, code, name, decimals) VALUES ('acme', 'C00010', 'x', 2)"
        )


async def test_the_same_export_again_changes_nothing_and_counts_nothing(importer: Importer, exports: Exports) -> None:
    exports.set("currencies", day("A", 100))
    await importer.run("acme", "currencies", "2024-05-01")
    await importer.run("acme", "currencies", "2024-05-02")

    run = await importer.last_run()
    assert (run["status"], run["parse_path"], run["rows_changed"], run["rows_deleted"]) == ("succeeded", "swap", 0, 0)
    assert await state(importer.db.pool) == (100, "A", "A")


@pytest.mark.timeout(120)  # 600,000 rows made in PostgreSQL: 3 s alone, 10 s on a loaded machine
@pytest.mark.parametrize(("missing_rows", "symbol", "joins"), [("delete", "B", 1), ("keep", "A", 1), ("keep", "B", 2)])
async def test_the_joins_walk_both_keys_once_with_the_servers_workers_and_never_probe_a_key_per_row(
    db: Database, missing_rows: str, symbol: str, joins: int
) -> None:
    """Nothing has ANALYZEd the new table when the joins run: left to its guesses, the planner probed the new
    key once per old row at a million rows (a nested loop, 2.8 times the merge join's CPU). The plans are read
    as they ran (auto_explain), so they also show the parallel workers at work: a query sent with a row limit
    (asyncpg's fetchrow) runs its plan without them, and a LIMIT made the planner not start them. A module
    keeping missing rows looks for the changed rows first (to the end where none changed, as with symbol A;
    stopped at a tenth where all did, then counted)."""
    module = catalogue().get("currencies").model_copy(update={"missing_rows": missing_rows})
    # Fewer rows than the million the nested loop was seen at: the plan is forced whatever the size, and the
    # parallel workers start from a few MB of key (min_parallel_index_scan_size).
    rows, plan = 300_000, MergePlan(module, [])
    fill = "INSERT INTO {} SELECT 'acme', format('C%s', i), 'Currency', 2, $1 FROM generate_series(1, $2) i"
    explained: list[str] = []

    def explain(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
        explained.append(str(message.message))

    async with db.pool.acquire() as conn, conn.transaction():
        load = await swap.create_load_table(conn, module, "acme")
        await conn.execute(fill.format(quote(load)), "A", rows)
        await swap.swap_in(conn, plan, "acme", Timings(), rows, None)  # a first load: nothing to count
        load = await swap.create_load_table(conn, module, "acme")
        await conn.execute(fill.format(quote(load)), symbol, rows)
        await conn.execute("LOAD 'auto_explain'")
        await conn.execute(
            "SET LOCAL auto_explain.log_min_duration = 0; SET LOCAL auto_explain.log_analyze = on; "
            "SET LOCAL auto_explain.log_level = notice; SET LOCAL max_parallel_workers_per_gather = 2"
        )
        conn.add_log_listener(explain)
        try:
            await swap.swap_in(conn, plan, "acme", Timings(), rows, None)
            await conn.execute("SELECT 1")  # the notices of the swap's statements are delivered by now
        finally:
            conn.remove_log_listener(explain)

    plans = [p for p in explained if "AS matched" in p or "AS inserted" in p]
    assert len(plans) == joins, explained
    for text in plans:
        assert "Merge Join" in text or "Merge Left Join" in text, text
        assert "Nested Loop" not in text and "Hash Join" not in text, text
        assert re.search(r"Workers Launched: [1-9]", text), text


async def test_a_file_the_swap_cannot_take_goes_the_careful_way_into_a_new_partition(
    importer: Importer, exports: Exports
) -> None:
    """A repeated key fails the new table's key; the careful path then MERGEs, into a partition made for it."""
    exports.set("currencies", export_body("currencies", HEAD + "AUD,Dollar,2,$\nAUD,Dollar again,2,$\n"))
    await importer.run("acme", "currencies", "2024-05-01")

    run = await importer.last_run()
    assert run["parse_path"].startswith("careful: COPY: could not create unique index")
    assert (run["status"], run["rows_imported"], run["rows_duplicate"]) == ("succeeded", 1, 1)
    assert await importer.db.rows("SELECT code, name FROM currencies") == [{"code": "AUD", "name": "Dollar again"}]
    assert await partitions(importer.db.pool) == ["currencies$acme"]
    assert await load_tables(importer.db.pool) == 0


async def test_a_reader_sees_the_old_rows_or_the_new_never_a_mix(importer: Importer, exports: Exports) -> None:
    old, new = (3000, "A", "A"), (2500, "B", "B")
    exports.set("currencies", day("A", 3000))
    await importer.run("acme", "currencies", "2024-05-01")
    exports.set("currencies", day("B", 2500, start=500))
    seen: list[tuple[int, str | None, str | None]] = []
    done = asyncio.Event()

    async def read() -> None:
        conn = await asyncpg.connect(importer.db.url)
        try:
            while not done.is_set():
                seen.append(await state(conn))
            seen.append(await state(conn))
        finally:
            await conn.close()

    reader = asyncio.create_task(read())
    try:
        await importer.run("acme", "currencies", "2024-05-02")
    finally:
        done.set()
        await reader

    assert set(seen) == {old, new}, set(seen)
    assert seen[0] == old and seen[-1] == new
    assert seen.index(new) > 0 and all(s == new for s in seen[seen.index(new) :])


@asynccontextmanager
async def holding_the_table(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A reader in the middle of a transaction on the module's table: the swap's lock waits for it."""
    conn = await asyncpg.connect(url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE currencies IN ACCESS SHARE MODE")
    try:
        yield conn
    finally:
        if not conn.is_closed():
            await tx.rollback()
            await conn.close()


async def swap_waiting(conn: asyncpg.Connection) -> int:
    """The pid of the backend whose swap waits for the module table's lock, once there is one."""
    query = (
        "SELECT pid FROM pg_locks WHERE relation = 'currencies'::regclass AND mode = 'AccessExclusiveLock' "
        "AND NOT granted"
    )
    async with asyncio.timeout(60):
        while (pid := await conn.fetchval(query)) is None:
            await asyncio.sleep(0.02)  # polling PostgreSQL's lock table for a state another process reaches
    return int(pid)


async def test_sigkill_while_the_swap_waits_leaves_the_old_rows_and_the_retry_swaps(
    importer: Importer, exports: Exports, tmp_path: Path
) -> None:
    exports.set("currencies", day("A", 3000))
    await importer.run("acme", "currencies", "2024-05-01")
    exports.set("currencies", day("B", 2500, start=500))

    async with holding_the_table(importer.db.url) as holder:
        await importer.enqueue("acme", "currencies", "2024-05-02")
        proc = worker_process(importer, tmp_path / "worker.log")
        try:
            backend = await swap_waiting(holder)
            proc.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    async with asyncio.timeout(30):  # the lock released, the orphaned backend runs into its lost client and ends
        while await importer.db.value("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend):
            await asyncio.sleep(0.02)

    assert await state(importer.db.pool) == (3000, "A", "A")
    assert await partitions(importer.db.pool) == ["currencies$acme"]
    assert await load_tables(importer.db.pool) == 0
    assert [r["status"] for r in await importer.db.runs()] == ["succeeded", "running"]

    assert await importer.redis.delete(f"arq:in-progress:{JOB}") == 1
    await importer.drain()

    assert await state(importer.db.pool) == (2500, "B", "B")
    runs = await importer.db.runs()
    assert [(r["status"], r["error_class"], r["rows_changed"], r["rows_deleted"]) for r in runs] == [
        ("succeeded", None, 3000, 0),
        ("failed", "abandoned", 0, 0),
        ("succeeded", None, 2500, 500),
    ]


async def test_postgres_restarting_while_the_swap_waits_is_retried_and_never_half_visible(
    importer: Importer, exports: Exports, private_postgres: tuple[str, Path]
) -> None:
    url, home = private_postgres
    local = importer.with_settings(database_url=url)
    exports.set("currencies", day("A", 3000))
    await local.run("acme", "currencies", "2024-05-01")
    exports.set("currencies", day("B", 2500, start=500))
    seen: set[tuple[int, str | None, str | None]] = set()
    finished = asyncio.Event()

    async def read() -> None:
        """A reader all along, through the restart, until the import is done."""
        while not finished.is_set():
            try:
                conn = await asyncpg.connect(url, timeout=2)
                try:
                    while not finished.is_set():
                        seen.add(await state(conn))
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError):
                await asyncio.sleep(0.05)  # the server is restarting; try again

    async def restart_mid_swap() -> None:
        async with holding_the_table(url) as holder:
            await swap_waiting(holder)
            await asyncio.to_thread(restart_postgres, home)

    reader = asyncio.create_task(read())
    try:
        restarter = asyncio.create_task(restart_mid_swap())
        await local.run("acme", "currencies", "2024-05-02")
        await restarter
    finally:
        finished.set()
        await reader

    assert seen <= {(3000, "A", "A"), (2500, "B", "B")} and (3000, "A", "A") in seen
    conn = await asyncpg.connect(url)
    try:
        assert await state(conn) == (2500, "B", "B")
        assert await partitions(conn) == ["currencies$acme"]
        assert await load_tables(conn) == 0
        runs = [r["status"] for r in await conn.fetch("SELECT status FROM import_runs ORDER BY id")]
    finally:
        await conn.close()
    assert runs[0] == runs[-1] == "succeeded" and set(runs[1:-1]) == {"failed"} and len(runs) >= 3


async def test_two_tenants_swapping_the_same_module_at_once_both_succeed_first_time(
    importer: Importer, exports: Exports
) -> None:
    """Neither import holds a lock on the module's table before its swap, so neither waits for (or deadlocks on)
    the other's whole import."""
    for tenant in ("acme", "globex"):
        exports.set("currencies", day("A", 3000), tenant=tenant)
        await importer.run(tenant, "currencies", "2024-05-01")
        exports.set("currencies", day("B", 2500, start=500), tenant=tenant)
    await importer.enqueue("acme", "currencies", "2024-05-02")
    await importer.enqueue("globex", "currencies", "2024-05-02")
    await importer.drain()

    runs = await importer.db.runs()
    assert sorted((r["tenant_id"], r["attempt"], r["status"], r["parse_path"]) for r in runs[2:]) == [
        ("acme", 1, "succeeded", "swap"),
        ("globex", 1, "succeeded", "swap"),
    ]
    assert await state(importer.db.pool) == await state(importer.db.pool, "globex") == (2500, "B", "B")


async def test_a_repeatable_read_snapshot_older_than_the_swap_reads_the_new_rows_not_none(
    importer: Importer, exports: Exports
) -> None:
    """The one MVCC exception of a swap: rows written by a later transaction. COPY FREEZE makes them the new rows
    for such a reader too (without it, the new partition would look empty to it)."""
    exports.set("currencies", day("A", 300))
    await importer.run("acme", "currencies", "2024-05-01")
    exports.set("currencies", day("B", 250, start=50))
    conn = await asyncpg.connect(importer.db.url)
    try:
        async with conn.transaction(isolation="repeatable_read"):
            await conn.fetchval("SELECT count(*) FROM import_runs")  # the snapshot is taken; currencies not read
            await importer.run("acme", "currencies", "2024-05-02")
            assert await state(conn) == (250, "B", "B")
    finally:
        await conn.close()
