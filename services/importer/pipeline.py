"""One import, composed in one place: fetch → decode → unzip → parse → validate → copy → merge → record.

Each stage is a function over an async stream (see its module); this function
only wires them, owns the temporary directory and the transaction, and writes
the ledger row for success in the same transaction as the merge. Nothing holds
the whole export: the zip is spooled (it must be seekable), everything else
flows through in chunks.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import aiohttp
import asyncpg

from services.importer import ledger
from services.importer.archive import ZipLimits, spool, unzip
from services.importer.csv_stream import CsvRecords, decode_text
from services.importer.envelope import b64decode, base64_payload
from services.importer.errors import BadExport
from services.importer.fetch import export_url, fetch
from services.importer.merge import MergePlan, copy_chunks, merge
from services.importer.progress import Progress
from services.importer.settings import ImporterSettings
from services.importer.stats import RunStats
from services.importer.streams import prefetch
from services.importer.validate import Rejects, plan_layout, validate
from shared.modules import ModuleDef


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


async def import_export_file(run: Run) -> str:
    """Import one export; returns the attempt's final status, or raises ImportFailed (nothing imported)."""
    settings, module, stats = run.settings, run.module, run.stats
    limits = ZipLimits(
        settings.importer_max_zip_bytes, settings.importer_max_csv_bytes, settings.importer_max_zip_ratio
    )
    url = export_url(settings.proxy_url, module.name, run.key.export_date.isoformat())
    with (
        tempfile.TemporaryDirectory(dir=settings.importer_temp_dir, prefix="conduit-import-") as workdir,
        tempfile.SpooledTemporaryFile(settings.importer_spool_memory_bytes, dir=workdir) as zipped,
    ):
        body = fetch(run.session, url, run.key.tenant, stats)
        with stats.timed("download"):
            await spool(b64decode(base64_payload(body, module.name), stats), zipped, limits, stats)

        text = decode_text(unzip(zipped, limits, stats), module.encoding, stats)
        records = CsvRecords(text, settings.importer_copy_chunk_rows, settings.importer_max_field_chars)
        layout = plan_layout(module, await records.header())
        stats.ignored_columns = layout.ignored
        rows = validate(records.batches(stats), layout, run.rejects, stats)

        plan = MergePlan(module, layout.columns)
        async with run.conn.transaction():
            await copy_chunks(run.conn, plan, prefetch(rows, depth=1), stats, run.progress.rows)
            if stats.rows_read == 0:
                raise BadExport("no_rows", "the file has a header but no rows; nothing was imported")
            await _lock_table(run)
            await merge(run.conn, plan, run.key.tenant, run.rejects, module.reject_threshold, stats)
            status = "partially_rejected" if run.rejects.count else "succeeded"
            await ledger.finish(run.conn, run.attempt, status, stats, run.rejects.kept, note=_note(run))
    return status


async def _lock_table(run: Run) -> None:
    """One merge at a time per tenant and module (two export dates may be imported at once)."""
    name = f"import-merge:{run.key.tenant}:{run.module.name}"
    await run.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", name)


def _note(run: Run) -> str | None:
    if run.rejects.count and run.module.missing_rows == "delete":
        return f"{run.rejects.count} rows rejected, so rows missing from the export were not deleted"
    return None
