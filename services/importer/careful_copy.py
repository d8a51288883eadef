"""The careful path on a tenant's first load: rows that surely fit go straight into the table by COPY.

Profiling the careful path (docs/benchmarks.md) found its time in PostgreSQL, not in aiocsv: every row
was COPYed into a text staging table and then written again by one MERGE casting the text, and MERGE
(like INSERT ... SELECT) writes rows one at a time where COPY writes them in batches. So on a first load
(the tenant has no rows in the table, as for the fast path's first load) the parsed rows are split:

- a row whose every value matches a pattern its column's type surely reads (``-?[0-9]{1,9}`` for an
  integer, an ISO date whose day exists, ...) and that leaves no required value empty is written back as
  CSV and streamed to ``COPY ... FORMAT csv`` into the table, where PostgreSQL's input functions (the
  same ones the casts call) read it;
- every other row (a value the patterns do not vouch for: wrong, or only unusual) is staged as before,
  and the careful merge decides it with PostgreSQL's casts, rejecting exactly the bad ones.

The patterns never reject anything, they only route: PostgreSQL stays the one judge of a value, so the
answers are the careful path's (tests/importer/test_csv_paths.py runs every file both ways). A pattern
that vouched for a value PostgreSQL refuses would fail the COPY and send the run back to the whole
careful path (:class:`NotDirect`), as does a key the file repeats.

The COPY runs in segments: a segment ends when the rows held back for staging reach a chunk, which are
then staged, so memory stays a chunk or two whatever the file holds.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from itertools import compress
from typing import Protocol

import asyncpg

from services.importer.merge import REFUSED, STAGE, MergePlan, Progress
from services.importer.pg_copy import until_lost
from services.importer.schema import quote
from services.importer.stats import Timings
from services.importer.validate import Row
from shared.modules import TENANT_COLUMN

# Days 29-31 only in months that have them, 29 February only in leap years.
_DAY = r"(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31"
_LEAP = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29"
_DATE = rf"(?!0000)(?:[0-9]{{4}}-(?:{_DAY})|{_LEAP})"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
_DECIMAL = r"-?[0-9]{1,15}(?:\.[0-9]{1,15})?"
# What each type's input function surely accepts, whatever the session's DateStyle. Narrow on purpose:
# a value outside these is not wrong, it is only left to PostgreSQL's casts on the staged rows.
SURE: dict[str, str] = {
    "integer": r"-?[0-9]{1,9}",
    "bigint": r"-?[0-9]{1,18}",
    "numeric": _DECIMAL,
    "boolean": r"true|false",
    "date": _DATE,
    "timestamptz": rf"{_DATE}[T ]{_TIME}(?:Z|[+-](?:0[0-9]|1[0-4]):?[0-5][0-9])?",
}


class NotDirect(Exception):
    """The direct COPY cannot give the careful path's answer for this file; take the whole careful path."""


@dataclass(frozen=True)
class Check:
    """One column's test: the pattern for one value (``""`` allowed unless required) and for many joined by NUL."""

    position: int
    one: Callable[[str], object]
    many: Callable[[str], object]


def _check(position: int, pattern: str, required: bool) -> Check:
    value = f"(?:{pattern})" if required else f"(?:{pattern})?"
    # NUL cannot be in a row that reached here (validate rejects those), so it can join values.
    return Check(position, re.compile(value).fullmatch, re.compile(f"{value}(?:\x00{value})*").fullmatch)


@dataclass(frozen=True)
class Checks:
    """A file's checks: one per column whose values can be refused, and where the text columns are."""

    columns: list[Check]
    texts: list[int]


def checks_for(plan: MergePlan) -> Checks | None:
    """The checks for ``plan``'s columns, or None when a column's type has no pattern (jsonb: stage it all)."""
    out, texts = [], []
    for position, name in enumerate(plan.columns):
        column = plan.module.column(name)
        required = plan.module.is_required(column)
        if column.type == "text":
            texts.append(position)
            if required:
                out.append(Check(position, bool, _none_empty))
            continue
        pattern = SURE.get(column.type)
        if pattern is None:
            return None
        out.append(_check(position, pattern, required))
    return Checks(out, texts)


def doubtful(columns: list[list[str]], checks: Checks) -> set[int]:
    """Indexes of the rows some check does not vouch for.

    Text needs no check: every text value is quoted for COPY, so a backslash-dot line can only stand
    inside quotes, which COPY reads as data (the generated test has such a value; and should a server
    ever stop there, COPY's row count would differ from the rows sent and the run stage every row).
    """
    found: set[int] = set()
    for check in checks.columns:
        _narrow(columns[check.position], check, found)
    return found


def csv_lines(columns: list[list[str]], texts: list[int], skip: set[int]) -> str:
    """The rows as CSV for COPY, but those in ``skip``: text quoted (so "" and empty are NULL alike), the rest bare.

    Built column by column, each with one C-speed join, replace and split, instead of csv.writer's field by
    field look for what needs quoting (measured: 2.7 s against 1.2 s for a million rows).
    Only values the checks vouched for are left bare, and none of those holds a comma, quote or line break.
    """
    columns = list(columns)
    for position in texts:
        joined = "\x00".join(columns[position]).replace('"', '""').replace("\x00", '"\x00"')
        columns[position] = f'"{joined}"'.split("\x00")
    lines: Iterable[str] = map(",".join, zip(*columns, strict=True))
    if skip:
        lines = compress(lines, [i not in skip for i in range(len(columns[0]))])
    return "\n".join(lines) + "\n"


def _none_empty(joined: str) -> bool:
    # Required text: no value empty, by string search rather than a pattern (a tenth of the time).
    return bool(joined) and "\x00\x00" not in joined and joined[0] != "\x00" and joined[-1] != "\x00"


def _narrow(values: list[str], check: Check, found: set[int]) -> None:
    # One C-speed match over the whole column, which nearly every batch passes; else each distinct value
    # once (halving ranges instead tried values five times over with a bad one in every 400 rows).
    if check.many("\x00".join(values)):
        return
    bad = {value for value in set(values) if not check.one(value)}
    found.update(i for i, value in enumerate(values) if value in bad)


@dataclass
class Split:
    """Rows (staging layout: fields, ``_n``, ``_line``) cut into CSV bytes for the table and rows held back."""

    batches: AsyncIterator[list[Row]]
    checks: Checks
    width: int
    hold: int
    held: list[Row] = field(default_factory=list)
    direct: int = 0
    staged: int = 0
    done: bool = False
    copy_encoding: str = "UTF8"  # the rows are written as UTF-8 text

    async def segment(self, timings: Timings) -> AsyncIterator[bytes]:
        """CSV of the sure rows until the held-back rows fill a chunk or the rows run out."""
        while len(self.held) < self.hold:
            try:
                rows = await anext(self.batches)
            except StopAsyncIteration:
                self.done = True
                return
            with timings.timed("route"):
                data = self._route(rows)
            if data:
                yield data

    def _route(self, rows: list[Row]) -> bytes:
        # Column by column, one list each (zip(*rows) makes tuples the garbage collector walks: 3x slower here).
        columns: list[list[str]] = [[row[p] for row in rows] for p in range(self.width)]  # type: ignore[misc]
        bad = doubtful(columns, self.checks)
        for i in sorted(bad):
            # Numbered 1, 2, ... in file order: the sorting out walks _n ranges, and dense ones are cheap.
            rows[i][-2] = self.staged + len(self.held) + 1
            self.held.append(rows[i])
        self.direct += len(rows) - len(bad)
        return b"" if len(bad) == len(rows) else csv_lines(columns, self.checks.texts, bad).encode()


class Segments(Protocol):
    """What :func:`copy_direct` drives: :class:`Split`, or csv_route.ByteSplit."""

    held: list[Row]
    direct: int
    staged: int
    done: bool
    copy_encoding: str

    def segment(self, timings: Timings) -> AsyncIterator[bytes]: ...


async def copy_direct(
    conn: asyncpg.Connection, plan: MergePlan, split: Segments, tenant: str, timings: Timings, progress: Progress
) -> int:
    """COPY the sure rows into the module's table and stage the rest; raises :class:`NotDirect` if COPY refuses.

    Returns the number of rows staged, numbered 1 to it in ``_n``.
    """
    await conn.execute("SELECT set_config('conduit.tenant_id', $1, true)", tenant)
    await conn.execute(plan.create_stage())
    table, columns = plan.module.table_name, plan.columns
    while not split.done:
        before = split.direct
        with timings.timed("copy"):
            try:
                status = await until_lost(
                    conn,
                    conn.copy_to_table(
                        table,
                        source=split.segment(timings),
                        columns=columns,
                        format="csv",
                        force_null=columns,
                        encoding=split.copy_encoding,
                    ),
                )
            except REFUSED as exc:
                raise NotDirect(f"COPY into the table: {exc}") from None
            if int(status.rsplit(" ", 1)[-1]) != split.direct - before:
                # Never seen: COPY read the rows otherwise than they were written.
                raise NotDirect(f"COPY read {status} where {split.direct - before} rows were sent")
            if split.held:
                await until_lost(conn, conn.copy_records_to_table(STAGE, records=split.held, columns=plan.copy_columns))
        split.staged += len(split.held)
        split.held = []
        await progress(split.direct + split.staged)
    return split.staged


async def check_no_overlap(
    conn: asyncpg.Connection, plan: MergePlan, tenant: str, split: Segments, merged: int
) -> None:
    """After the merge: a held-back row whose key a direct row also had was merged onto it, not beside it.

    The table held none of the tenant's rows before, so it must now hold exactly the direct rows and the
    ``merged`` rows the merge wrote; fewer means the file repeats a key across the two, which only the
    whole careful path (its duplicate rule: the last one wins, counted) answers. The merge writes (and so
    counts) every held-back row that meets a direct one, equal or not (``merge(only_staged=True)``): an
    equal copy passed over would leave the counts agreeing and the duplicate uncounted.
    """
    table = quote(plan.module.table_name)
    count = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {TENANT_COLUMN} = $1", tenant)
    if count != split.direct + merged:
        raise NotDirect("a key is repeated across rows COPY took and rows the merge took")
