"""One import, composed in one place: fetch → decode → unzip → parse → validate → copy → merge → record.

Each stage is a function over an async stream (see its module); this module
only wires them, owns the temporary directory and the transaction, keeps the
run's record from what the stages return (stats.py: the path taken as an
``ImportPath``, the counts as ``Copied``/``Merged`` results and the streaming
stages' tallies), and writes the ledger row for success in the same
transaction as the merge. Nothing holds
the whole export: the zip is decompressed as it downloads (zip_stream.py) and
spooled on the way, for zipfile to check its directory before anything commits
and for the careful path to read again; everything flows through in chunks.

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
from dataclasses import dataclass, replace
from typing import IO

import aiohttp
import asyncpg

from services.importer import ledger, swap
from services.importer.archive import Spooled, ZipLimits
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
from services.importer.csv_route import ByteSplit, RecordRouter
from services.importer.csv_scan import Untrusted
from services.importer.csv_stream import CsvRecords, TextSeen, decode_text
from services.importer.envelope import b64decode, base64_payload
from services.importer.errors import BadExport
from services.importer.fetch import export_url, fetch, max_body_bytes
from services.importer.merge import REFUSED, MergePlan, copy_chunks, merge, merge_staged
from services.importer.progress import Progress
from services.importer.schema import quote
from services.importer.settings import ImporterSettings
from services.importer.stats import ImportPath, Merged, PathTaken, RunRecord, Tally, Timings
from services.importer.streams import prefetch
from services.importer.validate import Layout, Rejects, plan_layout, validate
from services.importer.zip_stream import NeedMore, NotStreamed, Streamed, ZipStream
from shared.logging import get_logger
from shared.modules import ModuleDef

log = get_logger(__name__)
# Where the CSV comes from: the zip as it downloads, or (when that gave up) the spooled zip read by zipfile.
Source = Streamed | Spooled


@dataclass
class Run:
    """What one attempt works with, and the record of it the pipeline keeps as the stages finish."""

    settings: ImporterSettings
    session: aiohttp.ClientSession
    conn: asyncpg.Connection
    module: ModuleDef
    key: ledger.RunKey
    attempt: ledger.Attempt
    progress: Progress
    record: RunRecord
    rejects: Rejects

    @property
    def limits(self) -> ZipLimits:
        s = self.settings
        return ZipLimits(s.importer_max_zip_bytes, s.importer_max_csv_bytes, s.importer_max_zip_ratio)

    @property
    def timings(self) -> Timings:
        return self.record.timings


@dataclass(frozen=True)
class Loaded:
    """The rows are in: by which path, and what the load did to the table."""

    path: PathTaken
    merged: Merged


@dataclass(frozen=True)
class Fallback:
    """The fast path gave up (nothing of it is left): why, and whether it was the MERGE that refused."""

    why: str
    merge_refused: bool = False

    @property
    def path(self) -> PathTaken:
        return PathTaken(ImportPath.CAREFUL, why=self.why)


async def import_export_file(run: Run) -> str:
    """Import one export; returns the attempt's final status, or raises ImportFailed (nothing imported).

    fetch → decode → unzip as it arrives (spooled on the way), then :func:`import_zip`; where the stream gives up,
    the spooled zip again. The temporary directory goes with the ``with``.
    """
    settings, module = run.settings, run.module
    url = export_url(settings.proxy_url, module.name, run.key.export_date.isoformat())
    with (
        tempfile.TemporaryDirectory(dir=settings.importer_temp_dir, prefix="conduit-import-") as workdir,
        tempfile.SpooledTemporaryFile(settings.importer_spool_memory_bytes, dir=workdir) as zipped,
    ):
        max_bytes = max_body_bytes(settings.importer_max_zip_bytes)
        body = fetch(run.session, url, run.key.tenant, max_bytes, run.record.received)
        await run.progress.stage("download")
        try:
            return await import_download(run, b64decode(base64_payload(body, module.name), run.timings), zipped)
        finally:
            await body.aclose()  # type: ignore[attr-defined]  # the HTTP response, if COPY stopped before its end


async def import_download(run: Run, chunks: AsyncIterator[bytes], spool: IO[bytes]) -> str:
    """Import the zip arriving as ``chunks`` while it arrives, writing it to ``spool``; where the stream gives up
    (zip_stream.py), import the spooled zip as zipfile reads it."""
    stream = ZipStream(_download(chunks, run.timings), spool, run.limits, run.timings)
    try:
        return await import_zip(run, Streamed(stream, spool, run.limits, run.timings))
    except NotStreamed as exc:  # nothing of that attempt is left: the transaction rolled back
        log.info("import reads the spooled zip", run_id=run.attempt.id, module=run.module.name, why=str(exc)[:200])
        run.record.restart()
        run.rejects.clear()
        return await import_zip(run, Spooled(spool, run.limits, run.timings))
    finally:
        await stream.aclose()


async def _download(chunks: AsyncIterator[bytes], timings: Timings) -> AsyncIterator[bytes]:
    """The zip's bytes; ``download`` is the wall time from the first to the last (it overlaps the COPY)."""
    with timings.timed("download"):
        async for chunk in chunks:
            yield chunk


async def import_zip(run: Run, source: Source) -> str:
    """Import the zip's CSV in one transaction: header → fast path, or careful path if it gives up → record.

    A refusal waits for the rest of the download and the zip's directory (``settle``): their errors come first,
    as when the zip was read whole before anything else.
    """
    try:
        return await _import(run, source)
    except BadExport:
        await source.settle()
        raise


async def _import(run: Run, source: Source) -> str:
    record = run.record
    with run.timings.timed("header"):
        header, encoding = await _header(run, source)
        layout = plan_layout(run.module, header)
    record.ignored_columns = layout.ignored
    plan = MergePlan(run.module, layout.columns)
    async with run.conn.transaction():
        await run.progress.stage("copy")
        loaded = await _fast_path(run, source, plan, layout, encoding)
        if isinstance(loaded, Fallback):
            record.path = loaded.path  # recorded if the careful path fails too
            await run.progress.stage("careful parse")
            await source.settle()  # the careful path reads the spooled zip, whole and checked
            loaded = await _careful_path(run, source, plan, loaded, _Read(layout, encoding))
        record.path, record.merged = loaded.path, loaded.merged
        await run.progress.stage("record")
        status = "partially_rejected" if run.rejects.count else "succeeded"
        await ledger.finish(run.conn, run.attempt, status, record.outcome(), run.rejects.kept, note=_note(run))
    return status


async def _header(run: Run, source: Source) -> tuple[list[str], str]:
    """The CSV's first record, read with the careful parser from the start of the file, and its encoding.

    Parsed from what has arrived of the file, again with each piece more until it holds the first record.
    """
    while True:
        seen = TextSeen()
        text = decode_text(source.head(Tally()), run.module.encoding, run.timings, seen)
        try:
            return await CsvRecords(text, 1, run.settings.importer_max_field_chars).header(), seen.encoding
        except NeedMore:
            pass
        finally:
            await text.aclose()  # type: ignore[attr-defined]
        await source.more()


async def _fast_path(run: Run, source: Source, plan: MergePlan, layout: Layout, encoding: str) -> Loaded | Fallback:
    """COPY the CSV as it is: into the table on a first load, into a new partition to swap in (swap.py), else
    into staging and MERGE."""
    if not run.settings.importer_fast_path:
        return _fallback(run, "the fast path is off (IMPORTER_FAST_PATH)")
    pg_encoding = PG_ENCODINGS.get(encoding)
    if pg_encoding is None:
        return _fallback(run, f"COPY cannot read {encoding}")
    target: _Target | None = None
    try:
        async with run.conn.transaction():
            target = await _target(run, plan, layout)
            return await _copy_and_merge(run, source, plan, layout, pg_encoding, target)
    except COPY_REFUSED as exc:
        return _fallback(run, f"COPY: {exc}")
    except Untrusted as exc:
        return _fallback(run, f"COPY would misread this file: {exc}")
    except FieldTooLong as exc:
        return _fallback(run, str(exc))
    except REFUSED as exc:
        # A key twice, or a required value empty: the careful path's own MERGE would fail the same way.
        where = "COPY" if target is not None and target.direct else "MERGE"
        return _fallback(run, f"{where}: {exc}", merge_refused=True)


@dataclass(frozen=True)
class _Target:
    """Where the fast path COPYs: into the table (FIRST_LOAD), into a new table to swap in (SWAP), or staging."""

    path: ImportPath
    table: str | None = None

    @property
    def direct(self) -> bool:
        return self.path is not ImportPath.FAST


async def _target(run: Run, plan: MergePlan, layout: Layout) -> _Target:
    conn, tenant = run.conn, run.key.tenant
    with run.timings.timed("prepare"):
        await _lock_table(run)
        partitioned = await swap.is_partitioned(conn, run.module)
        if partitioned and swap.can_swap(run.module, layout):
            return _Target(ImportPath.SWAP, await swap.create_load_table(conn, run.module, tenant))
        if partitioned:
            await swap.ensure_partition(conn, run.module, tenant)
        first = not layout.ignored and await is_first_load(conn, plan, tenant)
        return _Target(ImportPath.FIRST_LOAD if first else ImportPath.FAST)


async def _copy_and_merge(
    run: Run, source: Source, plan: MergePlan, layout: Layout, encoding: str, target: _Target
) -> Loaded:
    conn, tenant, timings, limit = run.conn, run.key.tenant, run.timings, run.settings.importer_max_field_chars
    raw = _raw(run, source)
    if target.direct:
        copied = await copy_into_table(
            conn, plan, layout, raw, encoding, limit, tenant, timings, run.progress, target.table
        )
    else:
        copied = await copy_csv(conn, plan, layout, raw, encoding, limit, timings, run.progress)
    run.record.read = Tally(copied.rows)
    if copied.rows == 0:
        raise BadExport("no_rows", "the file has a header but no rows; nothing was imported")
    path, merged = target.path, Merged(changed=copied.rows)
    if path is ImportPath.SWAP:
        await run.progress.stage("swap")
        settings = run.settings
        swapped = await swap.swap_in(
            conn, plan, tenant, timings, copied.rows, settings.importer_temp_dir, settings.importer_swap_lock_wait
        )
        path, merged = swapped.path, swapped.merged
    elif path is ImportPath.FAST:
        await run.progress.stage("merge")
        merged = await merge_staged(conn, plan, tenant, timings)
    return Loaded(PathTaken(path, requoted=copied.requoted), merged)


def _raw(run: Run, source: Source) -> AsyncIterator[bytes]:
    run.record.csv = Tally()
    return source.read(run.record.csv)


def _fallback(run: Run, why: str, merge_refused: bool = False) -> Fallback:
    run.record.restart()
    log.info("import takes the careful path", run_id=run.attempt.id, module=run.module.name, why=why[:200])
    return Fallback(why, merge_refused)


@dataclass(frozen=True)
class _Read:
    """How the file reads: its columns' layout (from its header) and its encoding (Python's name)."""

    layout: Layout
    encoding: str

    @property
    def copy_encoding(self) -> str | None:
        """PostgreSQL's name for the encoding, when the file's bytes can go to COPY as they are."""
        return None if self.layout.ignored else PG_ENCODINGS.get(self.encoding)


async def _careful_path(run: Run, source: Source, plan: MergePlan, fallback: Fallback, read: _Read) -> Loaded:
    """Parse with aiocsv, check every record, stage with line numbers, and merge what fits.

    On a tenant's first load the rows that surely fit go straight into the table by COPY instead: as the
    file's bytes (csv_route.py) where its encoding and columns allow, else parsed and written again
    (careful_copy.py); where that cannot give this path's answer, the file is read again the whole way.
    """
    await _lock_table(run)
    if await swap.is_partitioned(run.conn, run.module):
        await swap.ensure_partition(run.conn, run.module, run.key.tenant)
    checks = checks_for(plan)
    if checks is not None and await is_first_load(run.conn, plan, run.key.tenant):
        try:
            async with run.conn.transaction():
                if read.copy_encoding is not None:
                    return Loaded(fallback.path, await _byte_pass(run, source, plan, fallback, read))
                return Loaded(fallback.path, await _careful_pass(run, source, plan, fallback, read, checks))
        except NotDirect as exc:
            log.info("careful path stages every row", run_id=run.attempt.id, module=run.module.name, why=str(exc)[:200])
            run.rejects.clear()
            run.record.restart()
    return Loaded(fallback.path, await _careful_pass(run, source, plan, fallback, read, None))


async def _careful_pass(
    run: Run, source: Source, plan: MergePlan, fallback: Fallback, first: _Read, checks: Checks | None
) -> Merged:
    """One read of the file: unzip → decode → parse → validate → chunked COPY → merge."""
    settings, conn, tenant, timings, record = run.settings, run.conn, run.key.tenant, run.timings, run.record
    count, seen, record.csv, record.read = RecordCount(), TextSeen(), Tally(), Tally()
    text = decode_text(count.through(source.read(record.csv)), run.module.encoding, timings, seen)
    records = CsvRecords(text, settings.importer_copy_chunk_rows, settings.importer_max_field_chars)
    layout = plan_layout(run.module, await records.header())
    if layout != first.layout:
        # The plan (the staging table's columns, their order) was made from the header as first read: a header
        # read otherwise now would put values in the wrong columns. Never seen since the cut byte order mark.
        raise RuntimeError(f"the header read again maps {layout.columns}, first {first.layout.columns}")
    rows = prefetch(validate(records.batches(timings), layout, run.rejects, seen, timings, record.read), depth=1)
    split = None if checks is None else Split(rows, checks, len(plan.columns), settings.importer_copy_chunk_rows)
    try:
        if split is None:
            staged = await copy_chunks(conn, plan, rows, timings, run.progress.rows)
        else:
            staged = await copy_direct(conn, plan, split, tenant, timings, run.progress.rows)
    finally:
        await rows.aclose()  # type: ignore[attr-defined]
    if count.never_closed:
        raise BadExport(
            "malformed_csv",
            f"line {records.last_record_line}: a quoted field is never closed (it runs to the end of the file)",
        )
    read = record.read.n
    _check_all_parsed(count, read)
    if read == 0:
        raise BadExport("no_rows", "the file has a header but no rows; nothing was imported")
    threshold = run.module.reject_threshold
    await run.progress.stage("merge")
    merged = await merge(
        conn, plan, tenant, run.rejects, threshold, timings, read, staged,
        refused_before=fallback.merge_refused, only_staged=bool(split),
    )  # fmt: skip
    record.merged = merged  # a failure from here on still records the rows rejected, as the ledger always has
    if split is None:
        return merged
    await check_no_overlap(conn, plan, tenant, split, merged.changed)
    return replace(merged, changed=merged.changed + split.direct)


async def _byte_pass(run: Run, source: Source, plan: MergePlan, fallback: Fallback, read: _Read) -> Merged:
    """A first load's one read of the file at the byte level: sure records COPYed into the table as they are,
    the others parsed (aiocsv), validated and staged; then the merge of the staged rows (csv_route.py)."""
    settings, conn, tenant, timings, record = run.settings, run.conn, run.key.tenant, run.timings, run.record
    record.csv, record.read = Tally(), Tally()
    limit = settings.importer_max_field_chars
    split = ByteSplit(
        source.read(record.csv), RecordRouter(plan, limit), read.layout, run.rejects,
        record.read, settings.importer_copy_chunk_rows, limit, read.encoding, read.copy_encoding or "",
    )  # fmt: skip
    try:
        staged = await copy_direct(conn, plan, split, tenant, timings, run.progress.rows)
    finally:
        await split.aclose()
    if record.read.n == 0:
        raise BadExport("no_rows", "the file has a header but no rows; nothing was imported")
    await run.progress.stage("merge")
    merged = await merge(
        conn, plan, tenant, run.rejects, run.module.reject_threshold, timings, record.read.n, staged,
        refused_before=fallback.merge_refused, only_staged=True,
    )  # fmt: skip
    record.merged = merged
    await check_no_overlap(conn, plan, tenant, split, merged.changed)
    return replace(merged, changed=merged.changed + split.direct)


def _check_all_parsed(count: RecordCount, read: int) -> None:
    """The parser lost (or made up) records: never import, or delete by, part of a file."""
    if count.records is not None and count.records - 1 != read:
        raise BadExport(
            "incomplete_parse",
            f"the CSV parser read {read} rows where the file holds {count.records - 1}; nothing was imported",
        )


async def _lock_table(run: Run) -> None:
    await lock_tenant_rows(run.conn, run.module.table_name, run.key.tenant)


async def lock_tenant_rows(conn: asyncpg.Connection, table: str, tenant: str) -> None:
    """One merge at a time per tenant and table (two export dates may be imported at once).

    Keyed by the table's oid, not its name: two deployments in two schemas of one database never wait
    on each other.
    """
    key = "hashtextextended(coalesce(to_regclass($1)::oid::text, $1) || ':' || $2, 0)"
    await conn.execute(f"SELECT pg_advisory_xact_lock({key})", quote(table), tenant)


def _note(run: Run) -> str | None:
    if run.rejects.count and run.module.missing_rows == "delete":
        return f"{run.rejects.count} rows rejected, so rows missing from the export were not deleted"
    return None
