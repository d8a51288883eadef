"""The fast path of stages 4 to 6: PostgreSQL parses the CSV itself (``COPY ... FORMAT csv``) into text columns.

Measured on a million rows of ten columns here, parsing in Python costs more
than everything PostgreSQL does with the rows: aiocsv 2.4 s, the csv module
1.7 s, building the records for a binary COPY another second or two; sending
the raw bytes and letting COPY parse them takes 1.5 s in all, on PostgreSQL's
core while the worker's core only decompresses. So a file goes this way first.

A tenant's first load of a module goes further: straight into the module's
table (tenant_id comes from the session's ``conduit.tenant_id``, the column's
default). COPY writes rows in batches, INSERT and MERGE one by one: a million
rows go in about twice as fast, which is what an onboarding needs.

COPY is all or nothing: a ragged row, a NUL, bytes that are not in the encoding,
or a quote never closed stops it. Then (and when a value does not fit its
type, or a key repeats, which the MERGE finds) the run falls back to the
careful path: aiocsv and a record-by-record check, which knows every row's
line number and rejects rows one by one. A file of clean rows never pays for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from services.importer.csv_fields import FieldLimit, FieldTooLong
from services.importer.csv_requote import CopyFeed
from services.importer.csv_scan import Untrusted
from services.importer.merge import STAGE, MergePlan
from services.importer.pg_copy import until_lost
from services.importer.progress import Progress
from services.importer.stats import Timings
from services.importer.streams import whole_start
from services.importer.validate import Layout

_UTF8_BOM = b"\xef\xbb\xbf"
# Python codec names (codecs.lookup(...).name) and the PostgreSQL encodings COPY can read them as.
PG_ENCODINGS = {
    "utf-8": "UTF8",
    "cp1252": "WIN1252",
    "cp1250": "WIN1250",
    "cp1251": "WIN1251",
    "iso8859-1": "LATIN1",
    "iso8859-2": "LATIN2",
    "iso8859-15": "LATIN9",
    "latin-1": "LATIN1",
}
# What makes COPY give up on a file: the careful path then takes over.
COPY_REFUSED = (asyncpg.exceptions.DataError,)
__all__ = ["COPY_REFUSED", "PG_ENCODINGS", "Copied", "FieldTooLong", "copy_csv", "copy_into_table", "is_first_load"]


@dataclass(frozen=True)
class Copied:
    """What a COPY of the CSV read: its rows (the header aside), and how many the feed wrote again first."""

    rows: int
    requoted: int


def raw_columns(layout: Layout) -> list[str]:
    """A staging column for every field of the header: the module's name, or a placeholder for an ignored one."""
    names = [f"_ignored_{i}" for i in range(layout.width)]
    for name, position in zip(layout.columns, layout.positions, strict=True):
        names[position] = name
    return names


async def copy_csv(
    conn: asyncpg.Connection,
    plan: MergePlan,
    layout: Layout,
    chunks: AsyncIterator[bytes],
    encoding: str,
    max_chars: int,
    timings: Timings,
    progress: Progress,
) -> Copied:
    """COPY the CSV bytes, header and all, into the staging table.

    Raises :class:`FieldTooLong` (and COPY is aborted) where a field is longer than ``max_chars``.
    """
    columns = raw_columns(layout)
    await conn.execute(f"CREATE TEMP TABLE {STAGE} ({', '.join(_q(c) + ' text' for c in columns)}) ON COMMIT DROP")
    feed = CopyFeed(FieldLimit(max_chars, encoding))
    with timings.timed("copy"):
        status = await until_lost(
            conn,
            conn.copy_to_table(
                STAGE,
                source=_observed(chunks, progress, feed, timings),
                columns=columns,
                format="csv",
                header=True,
                encoding=encoding,
            ),
        )
    return _all_read(status, feed)


async def is_first_load(conn: asyncpg.Connection, plan: MergePlan, tenant: str) -> bool:
    """Whether the tenant has no rows in the module's table yet (the caller holds the table's merge lock)."""
    table = _q(plan.module.table_name)
    found = await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE tenant_id = $1)", tenant)
    return not found


async def copy_into_table(
    conn: asyncpg.Connection,
    plan: MergePlan,
    layout: Layout,
    chunks: AsyncIterator[bytes],
    encoding: str,
    max_chars: int,
    tenant: str,
    timings: Timings,
    progress: Progress,
    table: str | None = None,
) -> Copied:
    """COPY the CSV straight into the module's table; empty and "" fields are NULL, as on the other paths.

    Raises :class:`FieldTooLong` (and COPY is aborted) where a field is longer than ``max_chars``, in any column.
    ``table``: a new table of the tenant's created in this transaction instead (swap.py), COPYed with FREEZE.
    """
    await conn.execute("SELECT set_config('conduit.tenant_id', $1, true)", tenant)
    feed = CopyFeed(FieldLimit(max_chars, encoding))
    with timings.timed("copy"):
        status = await until_lost(
            conn,
            conn.copy_to_table(
                table or plan.module.table_name,
                source=_observed(chunks, progress, feed, timings),
                columns=layout.columns,
                format="csv",
                header=True,
                encoding=encoding,
                force_null=layout.columns,
                freeze=table is not None,
            ),
        )
    return _all_read(status, feed)


def _all_read(status: str, feed: CopyFeed) -> Copied:
    """COPY's row count, checked against the records the feed counted (the header is one)."""
    rows = int(status.rsplit(" ", 1)[-1])
    if rows != feed.records - 1:
        raise Untrusted(f"COPY read {rows} rows where the file holds {feed.records - 1}")
    return Copied(rows, feed.rewritten)


async def _observed(
    chunks: AsyncIterator[bytes], progress: Progress, feed: CopyFeed, timings: Timings
) -> AsyncIterator[bytes]:
    """The bytes as they go to COPY: without a UTF-8 byte order mark, through the feed, counted for progress.

    The feed passes most chunks on as they are and writes again the records COPY would misread
    (csv_requote.py); what it cannot write raises :class:`Untrusted`, which aborts the COPY before COPY
    has read that part (it never completes). (Running the feed in a thread, to overlap it with the COPY
    of the chunk before, left asyncpg waiting forever on a cancelled COPY now and then: not done.)
    """
    first = True
    async for chunk in whole_start(chunks, len(_UTF8_BOM)):
        if first:
            first = False
            if chunk.startswith(_UTF8_BOM):
                chunk = chunk[len(_UTF8_BOM) :]
        with timings.timed("feed"):
            ready = feed.feed(chunk)
        if ready:
            yield ready
        await progress.rows(feed.records)
    with timings.timed("feed"):
        last = feed.finish()
    if last:
        yield last
    await progress.rows(feed.records)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
