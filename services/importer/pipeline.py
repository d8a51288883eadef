"""One import, composed in one place: fetch → decode → unzip → parse → validate → copy → merge → record.

Each stage is a function over an async stream (see its module); this module
only wires them, owns the temporary directory and the transaction, and writes
the ledger row for success in the same transaction as the merge. Nothing holds
the whole export: the zip is spooled (it must be seekable), everything else
flows through in chunks.

Parsing takes one of two paths (measurements in docs/benchmarks.md):

- fast: PostgreSQL parses the CSV in COPY (straight into the table on a
  tenant's first load, else into staging, cast in the MERGE); Python only
  decompresses. Any file that is not clean falls back, inside the same
  transaction, to
- careful: aiocsv in the worker, every record checked and numbered, bad rows
  rejected one by one with their line, column and reason.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

import aiohttp
import asyncpg

from services.importer import ledger, swap
from services.importer.archive import ZipLimits, spool, unzip
from services.importer.careful_copy import Checks, NotDirect, Split, check_no_overlap, checks_for, copy_direct
from services.importer.csv_copy import (
    COPY_REFUSED,
    PG_ENCODINGS,
    FieldTooLong,
    copy_csv,
    copy_into_table,
    is_first_load,
)
from services.importer.csv_count import RecordCount
from services.importer.csv_scan import Untrusted
from services.importer.csv_stream import CsvRecords, decode_text
from services.importer.envelope import b64decode, base64_payload
from services.importer.errors import BadExport
from services.importer.fetch import export_url, fetch, max_body_bytes
from services.importer.merge import REFUSED, MergePlan, copy_chunks, merge, merge_staged
from services.importer.progress import Progress
from services.importer.settings import ImporterSettings
from services.importer.stats import RunStats
from services.importer.streams import prefetch
from services.importer.validate import Layout, Rejects, plan_layout, validate
from shared.logging import get_logger
from shared.modules import ModuleDef

log = get_logger(__name__)


@dataclass
class Run:
    """What one attempt works with and what it accumulates."""

    settings: ImporterSettings
    session: aiohttp.ClientSession
    conn: asyncpg.Connection
    module: ModuleDef
    key: ledger.RunKey
    attempt: ledger.Attempt
    progress: Progress
    stats: RunStats
    rejects: Rejects

    @property
    def limits(self) -> ZipLimits:
        s = self.settings
        return ZipLimits(s.importer_max_zip_bytes, s.importer_max_csv_bytes, s.importer_max_zip_ratio)


async def import_export_file(run: Run) -> str:
    """Import one export; returns the attempt's final status, or raises ImportFailed (nothing imported)."""
    settings, module, stats = run.settings, run.module, run.stats
    url = export_url(settings.proxy_url, module.name, run.key.export_date.isoformat())
    with (
        tempfile.TemporaryDirectory(dir=settings.importer_temp_dir, prefix="conduit-import-") as workdir,
        tempfile.SpooledTemporaryFile(settings.importer_spool_memory_bytes, dir=workdir) as zipped,
    ):
        body = fetch(run.session, url, run.key.tenant, stats, max_body_bytes(settings.importer_max_zip_bytes))
        await run.progress.stage("download")
        with stats.timed("download"):
            await spool(b64decode(base64_payload(body, module.name), stats), zipped, run.limits, stats)
        return await import_zip(run, zipped)


async def import_zip(run: Run, zipped: IO[bytes]) -> str:
    """Import the spooled zip: header, one of the paths, and the ledger row, in one transaction."""
    with run.stats.timed("header"):
        layout = plan_layout(run.module, await _header(run, zipped))
    run.stats.ignored_columns = layout.ignored
    plan = MergePlan(run.module, layout.columns)
    async with run.conn.transaction():
        await run.progress.stage("copy")
        refused = await _fast_path(run, zipped, plan, layout)
        if refused is not None:
            await run.progress.stage("careful parse")
            await _careful_path(run, zipped, plan, refused)
        await run.progress.stage("record")
        status = "partially_rejected" if run.rejects.count else "succeeded"
        await ledger.finish(run.conn, run.attempt, status, run.stats, run.rejects.kept, note=_note(run))
    return status


async def _header(run: Run, zipped: IO[bytes]) -> list[str]:
    """The CSV's first record, read with the careful parser from the start of the file."""
    text = decode_text(unzip(zipped, run.limits, run.stats), run.module.encoding, run.stats)
    try:
        return await CsvRecords(text, 1, run.settings.importer_max_field_chars).header()
    finally:
        await text.aclose()  # type: ignore[attr-defined]
        run.stats.bytes_csv = 0


async def _fast_path(run: Run, zipped: IO[bytes], plan: MergePlan, layout: Layout) -> str | None:
    """COPY the CSV as it is (into the table on a first load, into a new partition to swap in, else into staging
    and MERGE).

    Returns None when the rows are in, or why the careful path must take over.
    """
    if not run.settings.importer_fast_path:
        return _fallback(run, "the fast path is off (IMPORTER_FAST_PATH)")
    encoding = PG_ENCODINGS.get(run.stats.encoding)
    if encoding is None:
        return _fallback(run, f"COPY cannot read {run.stats.encoding}")
    way = _Way()
    try:
        async with run.conn.transaction():
            await _copy_and_merge(run, zipped, plan, layout, encoding, way)
    except COPY_REFUSED as exc:
        return _fallback(run, f"COPY: {exc}")
    except Untrusted as exc:
        return _fallback(run, f"COPY would misread this file: {exc}")
    except FieldTooLong as exc:
        return _fallback(run, str(exc))
    except REFUSED as exc:
        # A key twice, or a required value empty: the careful path's own MERGE would fail the same way.
        return _fallback(run, f"{'COPY' if way.direct else 'MERGE'}: {exc}", merge_refused=True)
    requoted = run.stats.requoted
    run.stats.path = way.label() + (f" ({requoted} records re-quoted for COPY)" if requoted else "")
    return None


@dataclass
class _Way:
    """Which way the fast path went: COPY into the table (a first load, or a new partition) or into staging."""

    direct: bool = False
    replaced: bool = False

    def label(self) -> str:
        return "swap" if self.replaced else "first load" if self.direct else "fast"


async def _copy_and_merge(
    run: Run, zipped: IO[bytes], plan: MergePlan, layout: Layout, encoding: str, way: _Way
) -> None:
    conn, tenant, stats, limit = run.conn, run.key.tenant, run.stats, run.settings.importer_max_field_chars
    with stats.timed("prepare"):
        await _lock_table(run)
        partitioned = await swap.is_partitioned(conn, run.module)
        into = partitioned and swap.can_swap(run.module, layout)
        if partitioned and not into:
            await swap.ensure_partition(conn, run.module, tenant)
        way.direct = into or (not layout.ignored and await is_first_load(conn, plan, tenant))
        table = await swap.create_load_table(conn, run.module, tenant) if into else None
    raw = _raw(run, zipped)
    if way.direct:
        rows = await copy_into_table(conn, plan, layout, raw, encoding, limit, tenant, stats, run.progress, table)
    else:
        rows = await copy_csv(conn, plan, layout, raw, encoding, limit, stats, run.progress)
    if rows == 0:
        raise BadExport("no_rows", "the file has a header but no rows; nothing was imported")
    if into:
        await run.progress.stage("swap")
        way.replaced = await swap.swap_in(conn, plan, tenant, stats)
    elif not way.direct:
        await run.progress.stage("merge")
        await merge_staged(conn, plan, tenant, stats)


def _raw(run: Run, zipped: IO[bytes]) -> AsyncIterator[bytes]:
    return unzip(zipped, run.limits, run.stats)


def _fallback(run: Run, why: str, merge_refused: bool = False) -> str:
    run.stats.restart_staging()
    run.stats.path = f"careful: {why}"[:300]
    log.info("import takes the careful path", run_id=run.attempt.id, module=run.module.name, why=why[:200])
    return "merge" if merge_refused else "copy"


async def _careful_path(run: Run, zipped: IO[bytes], plan: MergePlan, refused: str) -> None:
    """Parse with aiocsv, check every record, stage with line numbers, and merge what fits.

    On a tenant's first load the rows that surely fit go straight into the table by COPY instead
    (careful_copy.py); where that cannot give this path's answer, the file is read again the whole way.
    """
    await _lock_table(run)
    if await swap.is_partitioned(run.conn, run.module):
        await swap.ensure_partition(run.conn, run.module, run.key.tenant)
    checks = checks_for(plan)
    if checks is not None and await is_first_load(run.conn, plan, run.key.tenant):
        try:
            async with run.conn.transaction():
                await _careful_pass(run, zipped, plan, refused, checks)
            return
        except NotDirect as exc:
            log.info("careful path stages every row", run_id=run.attempt.id, module=run.module.name, why=str(exc)[:200])
            run.rejects.clear()
            run.stats.restart_staging()
            run.stats.rows_rejected = run.stats.rows_duplicate = 0
    await _careful_pass(run, zipped, plan, refused, None)


async def _careful_pass(run: Run, zipped: IO[bytes], plan: MergePlan, refused: str, checks: Checks | None) -> None:
    settings, stats, conn, tenant = run.settings, run.stats, run.conn, run.key.tenant
    count = RecordCount()
    text = decode_text(count.through(unzip(zipped, run.limits, stats)), run.module.encoding, stats)
    records = CsvRecords(text, settings.importer_copy_chunk_rows, settings.importer_max_field_chars)
    layout = plan_layout(run.module, await records.header())
    rows = prefetch(validate(records.batches(stats), layout, run.rejects, stats), depth=1)
    split = None if checks is None else Split(rows, checks, len(plan.columns), settings.importer_copy_chunk_rows)
    try:
        if split is None:
            await copy_chunks(conn, plan, rows, stats, run.progress.rows)
        else:
            await copy_direct(conn, plan, split, tenant, stats, run.progress.rows)
    finally:
        await rows.aclose()  # type: ignore[attr-defined]
    if count.never_closed:
        raise BadExport(
            "malformed_csv",
            f"line {records.last_record_line}: a quoted field is never closed (it runs to the end of the file)",
        )
    _check_all_parsed(count, stats)
    if stats.rows_read == 0:
        raise BadExport("no_rows", "the file has a header but no rows; nothing was imported")
    threshold = run.module.reject_threshold
    await run.progress.stage("merge")
    await merge(
        conn, plan, tenant, run.rejects, threshold, stats, refused_before=refused == "merge", only_staged=bool(split)
    )
    if split is not None:
        await check_no_overlap(conn, plan, tenant, split, stats.rows_changed)
        stats.rows_changed += split.direct


def _check_all_parsed(count: RecordCount, stats: RunStats) -> None:
    """The parser lost (or made up) records: never import, or delete by, part of a file."""
    if count.records is not None and count.records - 1 != stats.rows_read:
        raise BadExport(
            "incomplete_parse",
            f"the CSV parser read {stats.rows_read} rows where the file holds {count.records - 1}; "
            "nothing was imported",
        )


async def _lock_table(run: Run) -> None:
    """One merge at a time per tenant and module (two export dates may be imported at once)."""
    name = f"import-merge:{run.key.tenant}:{run.module.name}"
    await run.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", name)


def _note(run: Run) -> str | None:
    if run.rejects.count and run.module.missing_rows == "delete":
        return f"{run.rejects.count} rows rejected, so rows missing from the export were not deleted"
    return None
