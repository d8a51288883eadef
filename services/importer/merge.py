"""Stages 6 and 7, copy and merge: chunked COPY into a temporary staging table, then one merge into the module's table.

Everything happens in one transaction on one connection, so a run that dies
at any point (SIGKILL, PostgreSQL restarting, a cancelled job) leaves nothing
behind: the staging table is a temporary table dropped with the transaction,
and readers see the module's table either before the run or after it.

The merge is optimistic. A whole file goes in with one ``MERGE`` whose source
casts the staged text (NULLIF(x, '')::type): the fast path. MERGE rather than
``INSERT ... ON CONFLICT``: measured on a million rows here, it inserts into an
empty table as fast as a plain INSERT (6.1 s against 8.8 s for ON CONFLICT),
passes over unchanged rows in 3.7 s (8.3 s) and updates changed ones in
15.5 s (20.2 s), because it joins once instead of probing the index per row;
it needs room for the join in memory (:func:`write_merge`). If PostgreSQL
refuses a value, or the file repeats a key (asked first: :meth:`MergePlan.repeats_key`), that statement
rolls back to its savepoint and the slow path sorts the rows out with the same casts
(``import_cast_rows`` in migrations/0001), rejects the bad ones with their
column and reason, drops earlier duplicates of a key (the last one wins), and
merges the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from services.importer.errors import TooManyRejects
from services.importer.pg_copy import until_lost
from services.importer.schema import quote
from services.importer.stats import Merged, Timings
from services.importer.validate import Reject, Rejects, Row
from shared.modules import TENANT_COLUMN, ModuleDef

STAGE = "import_stage"
TYPED = "import_typed"
REJECTED = "import_rejected"


class RepeatedKey(Exception):
    """The staged file holds a key twice: only the slow path's rule (the last copy wins, counted) may choose."""


# What a value that does not fit its column, or a key twice, raises on the fast path; the slow path then sorts
# rows out.
REFUSED = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.CardinalityViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
    RepeatedKey,
)
# For the rest of the import's transaction. The MERGE hashes the tenant's rows (55 MB for a million): at
# the default work_mem of 4 MB they spill to disk in batches, which cost more than the join; 128 MB
# (hash_mem_multiplier 2 by default) holds some 4.5 million. JIT compiling the casts and the comparison
# costs more than it saves (as for swap.py's count). Measured in docs/benchmarks.md.
_SETTINGS = "SELECT set_config('work_mem', '128MB', true), set_config('jit', 'off', true)"
# Rows the slow path casts per statement; a range with a bad row is halved until the row is alone.
_SORT_BATCH = 10_000


def rows_differ(module: ModuleDef, columns: list[str], old: str, new: str) -> str:
    """SQL: the row ``new`` would store ``columns`` otherwise than ``old`` holds them (one of them updated).

    As stored, not only as values: ``9.99`` and ``9.990`` are equal numerics, but a reader gets back the one
    stored, so the scale counts too (a jsonb's numbers likewise, by its text). The swap stores today's rows
    whatever, so the MERGE must update such a row and both count it (tests/importer/test_redteam_paths.py).
    """

    def sides(alias: str) -> str:
        parts = []
        for name in columns:
            kind, value = module.column(name).type, f"{alias}.{quote(name)}"
            parts.append(
                f"{value}, scale({value})" if kind == "numeric" else f"{value}::text" if kind == "jsonb" else value
            )
        return ", ".join(parts)

    return f"ROW({sides(old)}) IS DISTINCT FROM ROW({sides(new)})"


@dataclass(frozen=True)
class MergePlan:
    """The SQL for one module and one file's columns."""

    module: ModuleDef
    columns: list[str]

    @property
    def copy_columns(self) -> list[str]:
        return [*self.columns, "_n", "_line"]

    def create_stage(self) -> str:
        cols = ", ".join(f"{quote(c)} text" for c in self.columns)
        return f"CREATE TEMP TABLE {STAGE} ({cols}, _n bigint, _line bigint) ON COMMIT DROP"

    def cast(self, name: str, source: str = "") -> str:
        kind = self.module.column(name).type
        value = f"NULLIF({source}{quote(name)}, '')"
        return value if kind == "text" else f"{value}::{kind}"

    def _merge(self, source: str, into: str | None = None, every_match: bool = False) -> str:
        """MERGE ``source`` (rows with the staged column names) into the module's table (or ``into``, the
        tenant's partition) for tenant $1.

        ``every_match``: write every row matched, changed or not, so the statement's count has it (a first
        load's held-back rows, where a match is a key the rows COPYed straight in hold too:
        careful_copy.check_no_overlap). Otherwise unchanged rows are not rewritten: a daily export is
        mostly yesterday's rows again.
        """
        target = quote(into or self.module.table_name)
        on = " AND ".join([f"t.{TENANT_COLUMN} = $1::text", *(f"t.{quote(k)} = s.{quote(k)}" for k in self.module.key)])
        cols = ", ".join(quote(c) for c in self.columns)
        values = ", ".join(f"s.{quote(c)}" for c in self.columns)
        insert = f"WHEN NOT MATCHED THEN INSERT ({TENANT_COLUMN}, {cols}) VALUES ($1::text, {values})"
        others = [c for c in self.columns if c not in self.module.key]
        if not others and not every_match:
            return f"MERGE INTO {target} t USING ({source}) s ON {on} {insert}"
        sets = ", ".join(f"{quote(c)} = s.{quote(c)}" for c in others or self.module.key)
        when = "" if every_match else f" AND {rows_differ(self.module, others, 't', 's')}"
        return f"MERGE INTO {target} t USING ({source}) s ON {on} WHEN MATCHED{when} THEN UPDATE SET {sets} {insert}"

    def fast_merge(self, every_match: bool = False) -> str:
        casts = ", ".join(f"{self.cast(c)} AS {quote(c)}" for c in self.columns)
        return self._merge(f"SELECT {casts} FROM {STAGE}", every_match=every_match)

    def typed_merge(self, source: str = TYPED, into: str | None = None, every_match: bool = False) -> str:
        cols = ", ".join(quote(c) for c in self.columns)
        return self._merge(f"SELECT {cols} FROM {quote(source)}", into, every_match)

    def repeats_key(self) -> str:
        """SQL: whether the staged file holds a key twice, as the table's key compares (``01`` is ``1``).

        Asked before the MERGE, which cannot be trusted to: it refuses a key only when two copies would
        change the stored row, so a copy equal to it let the other win wherever it stood, uncounted. A
        sort of the cast key (0.35 s a million rows, a hash aggregate 0.9 s: docs/benchmarks.md); for a key of
        several columns, of a 64-bit hash of them (0.5 s, sorting the row 1 s): equal keys hash equal, and a
        collision only sends the file to the slow path. Text compares in "C" (equal is equal bytes either way).
        """
        keys = [
            self.cast(k) + (' COLLATE "C"' if self.module.column(k).type == "text" else "") for k in self.module.key
        ]
        key = keys[0] if len(keys) == 1 else f"hash_record_extended(ROW({', '.join(keys)}), 0)"
        return f"SELECT count({key}) <> count(DISTINCT {key}) FROM {STAGE}"

    def create_typed(self) -> str:
        cols = []
        for name in self.columns:
            column = self.module.column(name)
            not_null = " NOT NULL" if self.module.is_required(column) else ""
            cols.append(f"{quote(name)} {column.type}{not_null}")
        return f"CREATE TEMP TABLE {TYPED} (_n bigint, _line bigint, {', '.join(cols)}) ON COMMIT DROP"

    def dedup(self) -> str:
        keys = ", ".join(quote(k) for k in self.module.key)
        return (
            f"DELETE FROM {TYPED} t USING (SELECT _n, row_number() OVER (PARTITION BY {keys} ORDER BY _n DESC) AS rn "
            f"FROM {TYPED}) d WHERE t._n = d._n AND d.rn > 1"
        )

    def delete_missing(self, typed: bool) -> str:
        target = quote(self.module.table_name)
        if typed:
            match = " AND ".join(f"s.{quote(k)} = t.{quote(k)}" for k in self.module.key)
            source = TYPED
        else:
            match = " AND ".join(f"{self.cast(k, 's.')} = t.{quote(k)}" for k in self.module.key)
            source = STAGE
        return (
            f"DELETE FROM {target} t WHERE t.{TENANT_COLUMN} = $1 "
            f"AND NOT EXISTS (SELECT 1 FROM {source} s WHERE {match})"
        )

    def raw_of_rejects(self) -> str:
        quoted = [
            f"CASE WHEN s.{quote(c)} ~ '[\",\\r\\n]' THEN '\"' || replace(s.{quote(c)}, '\"', '\"\"') || '\"' "
            f"ELSE s.{quote(c)} END"
            for c in self.columns
        ]
        return (
            f"SELECT r._line, r.column_name, r.reason, left(concat_ws(',', {', '.join(quoted)}), $2) AS raw "
            f"FROM {REJECTED} r JOIN {STAGE} s USING (_n) ORDER BY r._line LIMIT $1"
        )


Progress = Callable[[int], Awaitable[None]]


async def copy_chunks(
    conn: asyncpg.Connection, plan: MergePlan, chunks: AsyncIterator[list[Row]], timings: Timings, progress: Progress
) -> int:
    """COPY each chunk of rows into the staging table (binary COPY, a statement per chunk); returns the rows staged."""
    await conn.execute(plan.create_stage())
    columns = plan.copy_columns
    staged = 0
    async for rows in chunks:
        with timings.timed("copy"):
            await until_lost(conn, conn.copy_records_to_table(STAGE, records=rows, columns=columns))
        staged += len(rows)
        await progress(staged)
    return staged


async def merge_staged(conn: asyncpg.Connection, plan: MergePlan, tenant: str, timings: Timings) -> Merged:
    """The fast path's merge: one MERGE casting the staged text; raises one of :data:`REFUSED` if a row does not fit."""
    with timings.timed("merge"):
        changed = await write_merge(conn, plan, tenant)
    return Merged(changed, await _delete_missing(conn, plan, tenant, timings, typed=False))


async def write_merge(conn: asyncpg.Connection, plan: MergePlan, tenant: str) -> int:
    """The fast path's MERGE, with the settings a million rows need; returns the rows it inserted or changed.

    Measured against writing only what changed without MERGE (the changed and new rows found in one join,
    then an UPDATE and an INSERT of them; or UPDATE ... FROM plus an anti-join INSERT): not faster, and
    slower when every row changed (docs/benchmarks.md). What cost the time was the join spilling to disk.
    Raises :class:`RepeatedKey` before the MERGE if the file holds a key twice (:meth:`MergePlan.repeats_key`).
    """
    await conn.execute(_SETTINGS)
    return await _merge_once(conn, plan, tenant)


async def merge_table(conn: asyncpg.Connection, plan: MergePlan, tenant: str, source: str, into: str) -> int:
    """MERGE the typed, keyed table ``source`` (a file COPYed in: swap.py) into the tenant's partition ``into``;
    returns the rows it inserted or changed. Nothing to refuse: the values are cast and the keys unique."""
    await conn.execute(_SETTINGS)
    return _count(await conn.execute(plan.typed_merge(source, into), tenant))


async def _merge_once(conn: asyncpg.Connection, plan: MergePlan, tenant: str, every_match: bool = False) -> int:
    if await conn.fetchval(plan.repeats_key()):
        raise RepeatedKey("the file repeats a key")
    return _count(await conn.execute(plan.fast_merge(every_match), tenant))


async def merge(
    conn: asyncpg.Connection,
    plan: MergePlan,
    tenant: str,
    rejects: Rejects,
    threshold: float,
    timings: Timings,
    read: int,
    staged: int,
    refused_before: bool = False,
    only_staged: bool = False,
) -> Merged:
    """The careful path's merge: MERGE, and if a row does not fit, sort the rows out and MERGE the good ones.

    ``read``: the records the file holds, which the threshold is a share of; ``staged``: the rows in the
    staging table, numbered 1 to it.

    ``refused_before``: the fast path's MERGE of this file already failed, so go straight to sorting out.
    ``only_staged``: the staging table holds only some of the file's rows (the others were COPYed into the
    table, careful_copy.py), so what it lacks is not missing from the export: delete nothing; and a staged
    row matching one of them is written and counted even if equal (careful_copy.check_no_overlap).
    Raises :class:`TooManyRejects` past the threshold.
    """
    # Past the threshold already (ragged rows): still sort the values out, so every bad row is counted.
    typed = refused_before or rejects.count > threshold * read
    changed = duplicate = deleted = 0
    if not typed:
        with timings.timed("merge"):
            try:
                async with conn.transaction():
                    changed = await _merge_once(conn, plan, tenant, every_match=only_staged)
            except REFUSED:
                typed = True
    if typed:
        duplicate = await _sort_out(conn, plan, rejects, threshold, timings, read, staged, row_by_row=only_staged)
        with timings.timed("merge"):
            changed = _count(await conn.execute(plan.typed_merge(every_match=only_staged), tenant))
    if rejects.count == 0 and not only_staged:
        deleted = await _delete_missing(conn, plan, tenant, timings, typed)
    return Merged(changed, deleted, duplicate, rejects.count)


async def _delete_missing(conn: asyncpg.Connection, plan: MergePlan, tenant: str, timings: Timings, typed: bool) -> int:
    # Never after rejects: a rejected row is still in the export, its key must not count as gone.
    if plan.module.missing_rows != "delete":
        return 0
    with timings.timed("delete_missing"):
        return _count(await conn.execute(plan.delete_missing(typed), tenant))


async def _sort_out(
    conn: asyncpg.Connection,
    plan: MergePlan,
    rejects: Rejects,
    threshold: float,
    timings: Timings,
    read: int,
    staged: int,
    row_by_row: bool = False,
) -> int:
    """The slow path: cast row ranges into a typed table, rejecting rows that do not fit, then drop duplicates.

    Returns the duplicates dropped.

    ``row_by_row``: the staged rows are the ones held back as doubtful (careful_copy.py), many of them bad,
    where halving ranges would try most rows a dozen times: try each once instead, in one statement.
    """
    with timings.timed("sort_out"):
        await conn.execute(f"CREATE INDEX ON {STAGE} (_n)")
        await conn.execute(plan.create_typed())
        await conn.execute(
            f"CREATE TEMP TABLE {REJECTED} (_n bigint, _line bigint, column_name text, reason text) ON COMMIT DROP"
        )
        found = await _sort_out_held(conn, plan) if row_by_row else None
        if found is None:
            found = await _sort_out_ranges(conn, plan, staged, row_by_row)
        await _collect(conn, plan, rejects, found)
        _check_threshold(rejects.count, threshold, read)
        return _count(await conn.execute(plan.dedup()))


async def _sort_out_ranges(conn: asyncpg.Connection, plan: MergePlan, staged: int, row_by_row: bool) -> int:
    """Row ranges cast into the typed table, a range with a bad row halved until the row is alone
    (``import_cast_rows``); ``row_by_row``: each row alone from the start. Returns the rows rejected."""
    # No budget: every bad row is counted, even past the threshold (the run then fails with the full count).
    budget = staged
    cols = plan.columns
    casts = [plan.cast(c) for c in cols]
    required = [plan.module.is_required(plan.module.column(c)) for c in cols]
    if row_by_row:
        found: int = await conn.fetchval(
            "SELECT coalesce(sum(import_cast_rows($1, $2, $3, $4, $5, $6, n, n + 1, $7)), 0)::bigint "
            "FROM generate_series(1::bigint, $7::bigint) n",
            STAGE, TYPED, REJECTED, cols, casts, required, budget,
        )  # fmt: skip
        return found
    found = 0
    for lo in range(1, staged + 1, _SORT_BATCH):
        found += await conn.fetchval(
            "SELECT import_cast_rows($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            STAGE, TYPED, REJECTED, cols, casts, required, lo, lo + _SORT_BATCH, budget,
        )  # fmt: skip
    return found


async def _sort_out_held(conn: asyncpg.Connection, plan: MergePlan) -> int | None:
    """The held-back rows sorted out a column at a time: each bad row's first bad column and PostgreSQL's reason
    (as import_reject_row finds them), then the others cast into the typed table in one statement.

    A column whose every value casts is not looked at again; in the others each value is tried alone
    (import_cast_error), which costs a subtransaction per value where a row at a time cost one per row
    and then a dozen statements per bad row. Returns the rows rejected, or None if the rows left still
    do not go into the typed table (something other than a value): then every row is tried as before.
    """
    reasons = [reason for name in plan.columns if (reason := await _column_reason(conn, plan, name)) is not None]
    try:
        async with conn.transaction():
            found = 0
            if reasons:
                # The reasons in a subquery, each computed once (import_cast_error is volatile: not inlined).
                whys = ", ".join(f"{why} AS e{i}" for i, (_, why) in enumerate(reasons))
                first = " ".join(
                    f"WHEN e{i} IS NOT NULL THEN ARRAY[{name}, e{i}]" for i, (name, _) in enumerate(reasons)
                )
                status = await conn.execute(
                    f"INSERT INTO {REJECTED} (_n, _line, column_name, reason) SELECT _n, _line, r[1], r[2] "
                    f"FROM (SELECT _n, _line, CASE {first} END AS r "
                    f"FROM (SELECT _n, _line, {whys} FROM {STAGE} s) w) x WHERE r IS NOT NULL"
                )
                found = _count(status)
            casts = ", ".join(plan.cast(c, "s.") for c in plan.columns)
            await conn.execute(
                f"INSERT INTO {TYPED} SELECT s._n, s._line, {casts} FROM {STAGE} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {REJECTED} r WHERE r._n = s._n)"
            )
            return found
    except REFUSED:
        return None


async def _column_reason(conn: asyncpg.Connection, plan: MergePlan, name: str) -> tuple[str, str] | None:
    """SQL for (the column's name, why a staged row's value does not fit or NULL), or None if every value fits."""
    column = plan.module.column(name)
    value, literal = f"s.{quote(name)}", "'" + name.replace("'", "''") + "'"
    empty = "required value is empty" if plan.module.is_required(column) else None
    if column.type != "text":
        try:
            async with conn.transaction():
                await conn.execute(f"SELECT count({plan.cast(name, 's.')}) FROM {STAGE} s")
            fits = True
        except REFUSED:
            fits = False
        if fits and empty is None:
            return None
        cast = "NULL" if fits else f"import_cast_error({value}, '{column.type}')"
    elif empty is None:
        return None
    else:
        cast = "NULL"
    blank = f"'{empty}'" if empty else "NULL"
    return f"{literal}::text", f"(CASE WHEN coalesce({value}, '') = '' THEN {blank} ELSE {cast} END)"


async def _collect(conn: asyncpg.Connection, plan: MergePlan, rejects: Rejects, found: int) -> None:
    room = max(rejects.keep - len(rejects.kept), 0)
    rows = await conn.fetch(plan.raw_of_rejects(), room, rejects.raw_chars) if room else []
    rejects.kept.extend(Reject(r["_line"], r["column_name"], r["reason"], r["raw"]) for r in rows)
    rejects.kept.sort(key=lambda r: r.line)
    rejects.count += found


def _check_threshold(count: int, threshold: float, read: int) -> None:
    if count > threshold * read:
        raise TooManyRejects(
            "too_many_rejects",
            f"{count} of {read} rows rejected, more than the module allows ({threshold:.2%}); nothing was imported",
            rejected=count,
        )


def _count(status: str) -> int:
    """The row count of a command status such as ``INSERT 0 42`` or ``DELETE 7``."""
    return int(status.rsplit(" ", 1)[-1])
