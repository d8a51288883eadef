"""The daily import of a full snapshot (``missing_rows: delete``): a new table, swapped in for the tenant's partition.

Such a module's table is partitioned by tenant (migrations/0006). Its import
COPYs the export into a new table of the tenant's own (``COPY ... FREEZE``,
created in the same transaction: no MVCC bookkeeping per row later), builds
the primary key once the rows are in (one sort instead of a b-tree insert per
row), counts what changed against the tenant's current partition, then drops
that partition and attaches the new table in its place. No row is rewritten
by an UPDATE or removed by a DELETE, so nothing is left for VACUUM: the
module's disk is one day's rows, whatever the number of days.

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
rows deleted, from one join of the old partition and the new table on the
key; docs/benchmarks.md has what it costs and the alternatives measured.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg

from services.importer.merge import MergePlan, rows_differ
from services.importer.schema import quote
from services.importer.stats import Merged, Timings
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


async def is_partitioned(conn: asyncpg.Connection, module: ModuleDef) -> bool:
    """Whether the module's table is partitioned by tenant (migrations/0006), so an import can swap."""
    kind = await conn.fetchval("SELECT relkind FROM pg_class WHERE oid = to_regclass($1)", quote(module.table_name))
    return bool(kind == b"p")


def can_swap(module: ModuleDef, layout: Layout) -> bool:
    """A snapshot file that holds every column: a column the file lacks would keep yesterday's value in a MERGE."""
    return (
        module.missing_rows == "delete"
        and not layout.ignored
        and set(layout.columns) == {c.name for c in module.columns}
    )


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
    """What a swap did: the MERGE's counts, and whether it replaced a partition (else: the tenant's first load)."""

    replaced: bool
    merged: Merged


async def swap_in(conn: asyncpg.Connection, plan: MergePlan, tenant: str, timings: Timings, rows: int) -> Swapped:
    """Key the filled new table (``rows`` rows), count against the old partition, and put it in its place.

    Raises asyncpg's UniqueViolationError (one of merge.REFUSED) when the file repeats a key.
    """
    module = plan.module
    table, load = module.table_name, load_table(module, tenant)
    with timings.timed("index"):
        await conn.execute("SELECT conduit_add_parent_key($1, $2)", table, load)
    old = await conn.fetchval(_CURRENT, quote(table), tenant)
    with timings.timed("count"):
        if old is None:
            merged = Merged(changed=rows)
        else:
            merged = await count_changes(conn, module, old, load, rows)
    with timings.timed("swap"):
        if old is not None:
            await conn.execute(f"DROP TABLE {quote(old)}")
        literal = await conn.fetchval("SELECT quote_literal($1::text)", tenant)
        await conn.execute(f"ALTER TABLE {quote(table)} ATTACH PARTITION {quote(load)} FOR VALUES IN ({literal})")
        # Names no other tenant's partition or key can take, counted in bytes (migrations/0007).
        await conn.execute("SELECT conduit_name_tenant_partition($1, $2, $3::regclass)", table, tenant, quote(load))
    return Swapped(old is not None, merged)


# The plan of the count, for this transaction (docs/benchmarks.md has the figures). Nothing has ANALYZEd the
# new table, so the planner guesses many rows per key and, left to choose, probed the new key once per row of
# the old partition (a nested loop: 3.6 s of CPU per million rows, against 1.3 s for the merge join). Both
# tables are keyed: a merge join of the two keys walks each once and needs no memory; a hash join takes twice
# the CPU even with the memory not to spill; parallel workers saved no time on two cores; compiling the
# comparison (JIT) costs more than it saves.
_COUNT_PLAN = {"enable_nestloop": "off", "enable_hashjoin": "off", "max_parallel_workers_per_gather": "0", "jit": "off"}


async def count_changes(conn: asyncpg.Connection, module: ModuleDef, old: str, new: str, rows: int) -> Merged:
    """What a MERGE of ``new`` (``rows`` rows) into ``old`` would have counted: rows inserted or updated, deleted."""
    settings = ", ".join(f"set_config('{name}', '{value}', true)" for name, value in _COUNT_PLAN.items())
    await conn.execute(f"SELECT {settings}")
    row = await conn.fetchrow(count_sql(module, old, new))
    matched, updated, before = row["matched"], row["updated"], row["before"]
    return Merged(changed=rows - matched + updated, deleted=before - matched)


def count_sql(module: ModuleDef, old: str, new: str) -> str:
    """Rows matched by key, those of them updated, and the old table's rows, between two tables of one tenant.

    An inner join, not a full one: the planner may then merge the two primary keys or hash in parallel.
    """
    on = " AND ".join(f"o.{quote(k)} = n.{quote(k)}" for k in [TENANT_COLUMN, *module.key])
    others = [c.name for c in module.columns if c.name not in module.key]
    changed = rows_differ(module, others, "o", "n") if others else "false"
    return (
        f"SELECT count(*) AS matched, count(*) FILTER (WHERE {changed}) AS updated, "
        f"(SELECT count(*) FROM {quote(old)}) AS before FROM {quote(old)} o JOIN {quote(new)} n ON {on}"
    )


async def ensure_partition(conn: asyncpg.Connection, module: ModuleDef, tenant: str) -> None:
    """The tenant's partition, empty if it had none (the careful path MERGEs into the module's table)."""
    if await conn.fetchval(_CURRENT, quote(module.table_name), tenant) is None:
        await conn.execute("SELECT conduit_add_tenant_partition($1, $2)", module.table_name, tenant)
