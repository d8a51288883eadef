"""The daily import of a module's export: a new table, swapped in for the tenant's partition.

Every module's table is partitioned by tenant (migrations/0006, 0009). An
import of a file holding every column COPYs it into a new table of the
tenant's own (``COPY ... FREEZE``, created in the same transaction: no MVCC
bookkeeping per row later), builds the primary key once the rows are in (one
sort instead of a b-tree insert per row), counts what changed against the
tenant's current partition, then drops that partition and attaches the new
table in its place. No row is rewritten by an UPDATE or removed by a DELETE,
so nothing is left for VACUUM: the module's disk is one day's rows, whatever
the number of days.

A module that keeps rows missing from its export (``missing_rows: keep``)
looks for the changed rows with the same join. Where nothing changed, nothing
is written. A file holding every row of the partition is swapped in as above,
however few changed. A file lacking some has its few changed rows inserted and
updated in the tenant's partition and the new table dropped
(:func:`write_in_place`), or, where more changed, the rows it lacks carried
over into the new table (frozen too: :func:`carry_missing`) before the swap.
Where the file is the smaller part of what the tenant has (an export of the
day's changes, not of everything), the new table is MERGEd into the partition
instead, without walking all of it (:func:`swap_in`). Rows written in place
leave dead versions for VACUUM, as any UPDATE does.

All of it is in the import's transaction, with its ledger row: a run that dies
anywhere (SIGKILL, PostgreSQL restarting) leaves the old partition as it was
and the new table never existed. Readers of the tenant see the old rows until
the commit and the new ones after, never a mix: dropping the old partition
takes the module table's ACCESS EXCLUSIVE lock for the last milliseconds of
the transaction, so a query that starts meanwhile waits, then reads the new
rows. (A REPEATABLE READ transaction whose snapshot is older than the swap
sees the new rows too: they are frozen, so visible to every snapshot. It is
the one MVCC exception, the same as ``TRUNCATE``'s.) Other tenants' partitions
are never touched; their readers wait only for that lock.

The counts are the MERGE's: rows inserted or updated (``rows_changed``, a
row counts as updated when some column ``IS DISTINCT FROM`` yesterday's as stored: merge.rows_differ) and
rows deleted (for a snapshot; carried over otherwise), from one join of the old partition and the new table on
the key, run by PostgreSQL's parallel workers where the server allows them (a module keeping missing rows
first looks for the changed rows, and counts only where they were more than a tenth); docs/benchmarks.md has
what it costs and the alternatives measured.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.importer.merge import MergePlan, merge_table, rows_differ
from services.importer.schema import quote
from services.importer.stats import ImportPath, Merged, Timings
from services.importer.validate import Layout
from shared.modules import TENANT_COLUMN, ModuleDef

# The tenant's partition, by its bound as PostgreSQL prints it: the literal quoted as ruleutils.c's
# simple_quote_literal does (never E'', backslashes doubled only without standard_conforming_strings), not
# as format('%L') does (E'a\\b' for a backslash: no partition matched, and the import failed).
_CURRENT = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass($1) AND pg_get_expr(c.relpartbound, c.oid) = 'FOR VALUES IN (''' || replace(
    CASE current_setting('standard_conforming_strings') WHEN 'on' THEN $2::text
         ELSE replace($2, chr(92), repeat(chr(92), 2)) END,
    '''', '''''') || ''')'
"""

# Carried rows held in memory up to this size on their way back in, then in a file.
_CARRY_MEMORY = 16 * 1024 * 1024


async def is_partitioned(conn: asyncpg.Connection, module: ModuleDef) -> bool:
    """Whether the module's table is partitioned by tenant (migrations/0006, 0009), so an import can swap."""
    kind = await conn.fetchval("SELECT relkind FROM pg_class WHERE oid = to_regclass($1)", quote(module.table_name))
    return bool(kind == b"p")


def can_swap(module: ModuleDef, layout: Layout) -> bool:
    """A file that holds every column: a column the file lacks would keep yesterday's value in a MERGE."""
    return not layout.ignored and set(layout.columns) == {c.name for c in module.columns}


def load_table(module: ModuleDef, tenant: str) -> str:
    """The new table's name while it is filled: one per module and tenant (their imports run one at a time)."""
    digest = hashlib.sha256(f"{module.table_name}\0{tenant}".encode()).hexdigest()[:32]
    return f"conduit_load_{digest}"


async def create_load_table(conn: asyncpg.Connection, module: ModuleDef, tenant: str) -> str:
    """The empty new table, shaped as the module's (the caller COPYs into it in the same transaction)."""
    name = load_table(module, tenant)
    await conn.execute("SELECT conduit_new_tenant_table($1, $2, $3)", module.table_name, tenant, name)
    return name


@dataclass(frozen=True)
class Swapped:
    """What a swap did: how the rows went in (a swap, the tenant's first load, or a MERGE) and the counts."""

    path: ImportPath
    merged: Merged


async def swap_in(
    conn: asyncpg.Connection,
    plan: MergePlan,
    tenant: str,
    timings: Timings,
    rows: int,
    temp_dir: Path | None,
    lock_wait: float = 1.0,
) -> Swapped:
    """Key the filled new table (``rows`` rows), count against the old partition, and put it in its place.

    A module that keeps missing rows writes the few changed rows in place instead where the file lacks some of
    the partition's (:func:`writes_in_place`), or carries the rows the file lacks into the new table before
    the swap (spooled in ``temp_dir``), or MERGEs the new table in where the file is less than half the
    tenant's partition (:func:`_merges_in`). Where few changed and the module's table is not free within
    ``lock_wait`` seconds (a long query over it), the few are written in place rather than queue every
    reader of the module behind the swap's lock (:func:`_locked_at_once`).
    Raises asyncpg's UniqueViolationError (one of merge.REFUSED) when the file repeats a key.
    """
    module = plan.module
    table, load = module.table_name, load_table(module, tenant)
    keeps = module.missing_rows != "delete"
    with timings.timed("index"):
        await conn.execute("SELECT conduit_add_parent_key($1, $2)", table, load)
    old = await conn.fetchval(_CURRENT, quote(table), tenant)
    if old is None:
        merged, path = Merged(changed=rows), ImportPath.FIRST_LOAD
    elif keeps and await _merges_in(conn, old, load):
        with timings.timed("merge"):
            changed = await merge_table(conn, plan, tenant, load, old)
            await conn.execute(f"DROP TABLE {quote(load)}")
        return Swapped(ImportPath.FAST, Merged(changed=changed))
    elif keeps:
        with timings.timed("count"):
            changes = await find_changes(conn, module, old, load, rows)
        if writes_in_place(changes) or (changes.few and not await _locked_at_once(conn, table, lock_wait)):
            with timings.timed("write"):
                await write_in_place(conn, module, old, load, changes)
            return Swapped(ImportPath.FAST, changes.merged)
        merged, path = changes.merged, ImportPath.SWAP
        if changes.carries:
            with timings.timed("carry"):
                await carry_missing(conn, module, old, load, temp_dir)
    else:
        with timings.timed("count"):
            merged = await count_changes(conn, module, old, load, rows)
        path = ImportPath.SWAP
    with timings.timed("swap"):
        if old is not None:
            await conn.execute(f"DROP TABLE {quote(old)}")
        literal = await conn.fetchval("SELECT quote_literal($1::text)", tenant)
        await conn.execute(f"ALTER TABLE {quote(table)} ATTACH PARTITION {quote(load)} FOR VALUES IN ({literal})")
        # Names no other tenant's partition or key can take, counted in bytes (migrations/0007).
        await conn.execute("SELECT conduit_name_tenant_partition($1, $2, $3::regclass)", table, tenant, quote(load))
    return Swapped(path, merged)


async def _locked_at_once(conn: asyncpg.Connection, table: str, wait: float) -> bool:
    """Whether the module's table was locked for the swap (ACCESS EXCLUSIVE, as dropping a partition takes it)
    within ``wait`` seconds; else nothing is held and the transaction goes on.

    While a swap waits for that lock, every query on the module's table (each tenant's) queues behind it: a
    long report would stall them all until it ends. Only a swap that has another way (few rows changed) is
    bounded; the others wait, as they must.
    """
    try:
        async with conn.transaction():  # a savepoint: a lock not taken in time leaves the import as it was
            await conn.execute(f"SELECT set_config('lock_timeout', '{round(wait * 1000)}ms', true)")
            await conn.execute(f"LOCK TABLE ONLY {quote(table)} IN ACCESS EXCLUSIVE MODE")
    except asyncpg.LockNotAvailableError:
        return False
    await _plan_default(conn, ["lock_timeout"])
    return True


async def _merges_in(conn: asyncpg.Connection, old: str, new: str) -> bool:
    """Whether the file (in ``new``) is less than half the tenant's partition ``old``: then a swap would copy
    more rows it does not hold than rows it brings, and MERGEing it in writes only what changed.

    By their size on disk, exact where the row counts are not (a partition swapped in has no statistics until
    autovacuum comes by, and counting its rows costs a scan); the old partition's dead row versions, left by
    rows written in place, count in its size, which errs towards the MERGE near the border.
    """
    sizes = "SELECT pg_relation_size(to_regclass($1)) * 2 < pg_relation_size(to_regclass($2))"
    return bool(await conn.fetchval(sizes, quote(new), quote(old)))


@dataclass(frozen=True)
class Changes:
    """What a file would change in a partition: the counts (the file's rows matched by key, and the partition's
    rows where more changed), and where few rows changed, which (the new table's rows by ctid, to insert and to
    update; None where there were more than a tenth of the file)."""

    merged: Merged
    matched: int
    before: int | None
    inserts: list[tuple[int, int]] | None
    updates: list[tuple[int, int]] | None

    @property
    def few(self) -> bool:
        return self.inserts is not None and self.updates is not None

    @property
    def carries(self) -> bool:
        """The partition holds rows the file lacks (known where something changed)."""
        return self.before is not None and self.before > self.matched


def writes_in_place(changes: Changes) -> bool:
    """Whether the changed rows are written into the partition rather than the new table swapped in: where they
    are few and the file lacks some of the partition's rows (a swap would first copy those over), or where
    nothing changed (nothing to write). A file holding every row of the partition is swapped in however few
    changed: the new table is whole already, and no row version is left behind for VACUUM (docs/benchmarks.md).
    """
    return changes.few and (changes.merged.changed == 0 or changes.carries)


# A file changing more than a tenth of its rows (and more than a thousand) swaps instead of writing in place: a row
# written in place costs an index probe, a new row version and an index entry (a swapped-in table's pages are
# full: no HOT update), so past some share rewriting every row by COPY costs less; and the rows' ctids are held
# in memory on their way.
def in_place_limit(rows: int) -> int:
    return max(rows // 10, 1000)


async def find_changes(conn: asyncpg.Connection, module: ModuleDef, old: str, new: str, rows: int) -> Changes:
    """The rows of the new table (``rows`` rows) to insert and update in the old partition while they are few,
    from a join of the two on the key that stops at the first row past the limit; else the counts alone.

    Few: a row of the file matches an old one or is inserted (both keyed), so the counts follow from the rows;
    the partition's rows are counted where any changed (:func:`writes_in_place` asks). More: the join stopped
    early (at a tenth of the file where every row changed) and a count follows.
    """
    limit = in_place_limit(rows)
    await _plan(conn, _COUNT_PLAN)
    found = await conn.fetch(changed_rows_sql(module, old, new), limit + 1)
    if len(found) > limit:
        row = (await conn.fetch(count_sql(module, old, new)))[0]
        await _plan_default(conn, list(_COUNT_PLAN))
        merged = Merged(changed=rows - row["matched"] + row["updated"])
        return Changes(merged, row["matched"], row["before"], None, None)
    before = (await conn.fetch(f"SELECT count(*) FROM {quote(old)}"))[0][0] if found else None
    await _plan_default(conn, list(_COUNT_PLAN))
    inserts = [r["tid"] for r in found if r["inserted"]]
    updates = [r["tid"] for r in found if not r["inserted"]]
    return Changes(Merged(changed=len(found)), rows - len(inserts), before, inserts, updates)


def changed_rows_sql(module: ModuleDef, old: str, new: str) -> str:
    """Up to $1 rows of the new table that the old partition lacks or holds otherwise: their ctid, and whether
    inserted (else updated). A left join of the new table to the old on the key."""
    on, others = _same_key(module, "o", "n"), _others(module)
    changed = rows_differ(module, others, "o", "n") if others else "false"
    return (
        f"SELECT n.ctid AS tid, o.{TENANT_COLUMN} IS NULL AS inserted FROM {quote(new)} n "
        f"LEFT JOIN {quote(old)} o ON {on} WHERE o.{TENANT_COLUMN} IS NULL OR {changed} LIMIT $1"
    )


async def write_in_place(conn: asyncpg.Connection, module: ModuleDef, old: str, new: str, changes: Changes) -> None:
    """Insert and update in the old partition the few rows of the new table that changed, then drop it.

    The rows are fetched by ctid (a TID scan): left to itself the planner scanned the whole new table for
    them, 0.31-0.40 s for 10,000 rows of a million against 0.21-0.24 s.
    """
    await _plan(conn, {"enable_seqscan": "off"})
    columns = [TENANT_COLUMN, *(c.name for c in module.columns)]
    names = ", ".join(quote(c) for c in columns)
    if changes.inserts:
        await conn.execute(
            f"INSERT INTO {quote(old)} ({names}) SELECT {names} FROM {quote(new)} WHERE ctid = ANY($1::tid[])",
            changes.inserts,
        )
    others = _others(module)
    if changes.updates and others:
        sets = ", ".join(f"{quote(c)} = n.{quote(c)}" for c in others)
        on = _same_key(module, "o", "n")
        await conn.execute(
            f"UPDATE {quote(old)} o SET {sets} FROM {quote(new)} n WHERE n.ctid = ANY($1::tid[]) AND {on}",
            changes.updates,
        )
    await _plan_default(conn, ["enable_seqscan"])
    await conn.execute(f"DROP TABLE {quote(new)}")


async def carry_missing(conn: asyncpg.Connection, module: ModuleDef, old: str, new: str, temp_dir: Path | None) -> None:
    """Copy the rows of ``old`` whose key is not in ``new`` into ``new``, frozen like the file's rows.

    Through the worker, by binary COPY out to a spooled file and COPY ... FREEZE in, because no INSERT freezes
    its rows: an INSERT's would be the only rows of the new table that a REPEATABLE READ snapshot older than
    the swap cannot see, and it would read the file's rows without them, a mix. Spooled, so the worker's
    memory stays flat however many rows are carried.
    """
    match = _same_key(module, "n", "o")
    query = f"SELECT o.* FROM {quote(old)} o WHERE NOT EXISTS (SELECT 1 FROM {quote(new)} n WHERE {match})"
    with tempfile.SpooledTemporaryFile(_CARRY_MEMORY, dir=None if temp_dir is None else str(temp_dir)) as spool:
        await conn.copy_from_query(query, output=spool, format="binary")
        spool.seek(0)
        await conn.copy_to_table(new, source=spool, format="binary", freeze=True)


# The plan of the joins, for this transaction (docs/benchmarks.md has the figures). Nothing has ANALYZEd the
# new table, so the planner guesses many rows per key and, left to choose, probed the new key once per row of
# the old partition (a nested loop: 3.6 s of CPU per million rows, against 1.3 s for the merge join). Both
# tables are keyed: a merge join of the two keys walks each once and needs no memory; a hash join takes twice
# the CPU even with the memory not to spill; compiling the comparison (JIT) costs more than it saves. Parallel
# workers, as many as the server's max_parallel_workers_per_gather allows, split the new table's key between
# them: 0.52 s against 0.88 s for a million unchanged rows with one worker on two cores, the worker process
# idle meanwhile. Priced as it runs: the planner, expecting the LIMIT of find_changes to stop the join at a
# tenth, judged the workers not worth starting, though the join runs to the end wherever few rows changed.
# And run without a row limit on the portal (asyncpg's fetchrow and fetchval send one), which would make
# PostgreSQL run the plan without its workers: hence fetch. Tables under min_parallel_index_scan_size stay serial.
_COUNT_PLAN = {
    "enable_nestloop": "off",
    "enable_hashjoin": "off",
    "jit": "off",
    "parallel_setup_cost": "0",
    "parallel_tuple_cost": "0",
}


async def count_changes(conn: asyncpg.Connection, module: ModuleDef, old: str, new: str, rows: int) -> Merged:
    """What a MERGE of ``new`` (``rows`` rows) into ``old`` would have counted: rows inserted or updated, deleted."""
    await _plan(conn, _COUNT_PLAN)
    row = (await conn.fetch(count_sql(module, old, new)))[0]
    matched, updated, before = row["matched"], row["updated"], row["before"]
    return Merged(changed=rows - matched + updated, deleted=before - matched)


async def _plan(conn: asyncpg.Connection, settings: dict[str, str]) -> None:
    """Planner settings for the rest of the import's transaction (until :func:`_plan_default`)."""
    calls = ", ".join(f"set_config('{name}', '{value}', true)" for name, value in settings.items())
    await conn.execute(f"SELECT {calls}")


async def _plan_default(conn: asyncpg.Connection, names: list[str]) -> None:
    """The planner's settings as the session began, for what follows (a write of a few rows by key)."""
    await conn.execute("SELECT set_config(name, reset_val, true) FROM pg_settings WHERE name = ANY($1)", names)


def count_sql(module: ModuleDef, old: str, new: str) -> str:
    """Rows matched by key, those of them updated, and the old table's rows, between two tables of one tenant.

    An inner join, not a full one: the planner may then merge the two primary keys or hash in parallel.
    """
    on, others = _same_key(module, "o", "n"), _others(module)
    changed = rows_differ(module, others, "o", "n") if others else "false"
    return (
        f"SELECT count(*) AS matched, count(*) FILTER (WHERE {changed}) AS updated, "
        f"(SELECT count(*) FROM {quote(old)}) AS before FROM {quote(old)} o JOIN {quote(new)} n ON {on}"
    )


def _same_key(module: ModuleDef, a: str, b: str) -> str:
    """SQL: rows ``a`` and ``b`` of one module have the same tenant and key."""
    return " AND ".join(f"{a}.{quote(k)} = {b}.{quote(k)}" for k in [TENANT_COLUMN, *module.key])


def _others(module: ModuleDef) -> list[str]:
    """The module's columns that are not its key."""
    return [c.name for c in module.columns if c.name not in module.key]


async def ensure_partition(conn: asyncpg.Connection, module: ModuleDef, tenant: str) -> None:
    """The tenant's partition, empty if it had none (the careful path MERGEs into the module's table)."""
    if await conn.fetchval(_CURRENT, quote(module.table_name), tenant) is None:
        await conn.execute("SELECT conduit_add_tenant_partition($1, $2)", module.table_name, tenant)
