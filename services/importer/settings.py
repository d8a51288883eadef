"""Settings of the importer processes (``CONDUIT_IMPORTER_*`` and the common ``CONDUIT_*``).

The importer was called the worker until this release; its process settings were ``CONDUIT_WORKER_*``.
Those names still work, each as the ``CONDUIT_IMPORTER_*`` of the same suffix, and the importer logs a
warning naming them at start (:func:`deprecated_names`); the new name wins where both are set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from shared.db import DatabaseSettings
from shared.settings import TokenSettings

# The settings that were CONDUIT_WORKER_<SUFFIX>, now CONDUIT_IMPORTER_<SUFFIX>.
_RENAMED = "http_host http_port poll_delay max_jobs refresh_timeout import_timeout import_keep_result".split()
_OLD_PREFIX = "CONDUIT_WORKER_"


def deprecated_names() -> list[str]:
    """The ``CONDUIT_WORKER_*`` variables set, each read as its ``CONDUIT_IMPORTER_*`` (to warn about)."""
    return [name for name in (f"{_OLD_PREFIX}{suffix.upper()}" for suffix in _RENAMED) if name in os.environ]


# A settings source rather than pydantic's AliasChoices: aliases drop env_prefix and make the new and the
# old name equal in priority, where here the new name must win and the constructor keep its keywords.
class _OldWorkerNames(PydanticBaseSettingsSource):
    """``CONDUIT_WORKER_<SUFFIX>`` as ``importer_<suffix>``, below the real environment variables in priority."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the few names itself

    def __call__(self) -> dict[str, Any]:
        return {f"importer_{name[len(_OLD_PREFIX) :].lower()}": os.environ[name] for name in deprecated_names()}


class ImporterSettings(TokenSettings, DatabaseSettings):
    """How an importer process runs, and how it imports exports: limits, chunk sizes, retries, concurrency."""

    importer_http_host: str = "0.0.0.0"
    importer_http_port: int = Field(default=8081, ge=0, le=65535)
    # How often an idle arq worker looks for due jobs; bounds how late a deferred job starts.
    importer_poll_delay: float = Field(default=0.5, gt=0)
    # Jobs one importer process runs at once.
    importer_max_jobs: int = Field(default=10, gt=0)
    # Seconds a refresh job may run before arq cancels it (a token request plus the lock wait).
    importer_refresh_timeout: float = Field(default=60.0, gt=0)
    # Seconds an import may run before arq cancels it. arq also hands a job whose importer died to
    # another one this long (+10 s) after it started, so it bounds the recovery time: 5 M rows
    # import in about 90 s here, so 600 s leaves room and recovers within about ten minutes.
    importer_import_timeout: float = Field(default=600.0, gt=0)
    # How long arq keeps an import's result, during which the scheduler's job id cannot be enqueued
    # again: two days, so a day's import is enqueued once however often the scheduler looks.
    importer_import_keep_result: float = Field(default=172_800.0, ge=0)

    # Where the importer reaches the auth proxy; it never holds a token itself.
    proxy_url: str = "http://127.0.0.1:8080"
    importer_fetch_connect_timeout: float = Field(default=10.0, gt=0)
    # Seconds without a byte from the proxy before the download counts as failed (transient).
    importer_fetch_read_timeout: float = Field(default=120.0, gt=0)

    # Where the zip is spooled (it must be seekable); one directory per run, removed afterwards.
    importer_temp_dir: Path | None = None
    # Zips up to this size stay in memory; larger ones go to a file in the temp dir.
    importer_spool_memory_bytes: int = Field(default=8 << 20, ge=0)
    # Refuse an export whose zip is larger than this (bytes).
    importer_max_zip_bytes: int = Field(default=2 << 30, gt=0)
    # Zip bomb limits: the CSV may not be larger than this, nor this many times its compressed size.
    importer_max_csv_bytes: int = Field(default=20 << 30, gt=0)
    importer_max_zip_ratio: float = Field(default=200.0, gt=1)
    # A field longer than this many characters fails the run (a 10 MB field is a broken file, not data).
    importer_max_field_chars: int = Field(default=1 << 20, gt=0)

    # Let PostgreSQL parse clean files (COPY FORMAT csv); off sends every file down the careful path
    # (aiocsv in the importer), which is slower but names every bad row's line. A kill switch and for benches.
    importer_fast_path: bool = True
    # Seconds a swap of a few changed rows waits for its module table's lock (a long query over the table holds
    # it off, and every query on the table queues behind the wait) before writing the rows in place instead.
    importer_swap_lock_wait: float = Field(default=1.0, gt=0)
    # Rows per COPY into the staging table on the careful path, chosen by measurement (docs/benchmarks.md):
    # 1,000 pays a round trip per chunk (2x slower), 20,000 is 4% faster than 5,000 but holds 40 MB more
    # parsed rows at once, which takes a million-row careful import over 150 MB.
    importer_copy_chunk_rows: int = Field(default=5_000, gt=0)
    # A progress event is published on Redis every this many rows.
    importer_progress_rows: int = Field(default=100_000, gt=0)
    # Rejected rows kept per run in import_rejects (all are counted).
    importer_rejects_kept: int = Field(default=1_000, ge=0)
    # Raw lines of rejected rows are cut to this many characters.
    importer_reject_raw_chars: int = Field(default=2_000, ge=0)

    # Attempts of one import job before it stays failed (transient failures only; a bad file fails at once).
    importer_max_attempts: int = Field(default=5, ge=1)
    # Backoff between attempts: base * 2^(attempt-1), at most max, with full jitter.
    importer_retry_base: float = Field(default=10.0, gt=0)
    importer_retry_max: float = Field(default=600.0, gt=0)
    # Imports running at once for one tenant, across every importer process.
    importer_tenant_concurrency: int = Field(default=2, ge=1)
    # A slot is leased for this long and renewed while the import runs, so a dead importer's slot frees itself.
    importer_slot_lease: float = Field(default=30.0, gt=1)
    # Export requests per second to one provider (across every importer process), and the burst allowed.
    importer_provider_rate: float = Field(default=5.0, gt=0)
    importer_provider_burst: int = Field(default=5, ge=1)
    # Per-provider overrides of the rate, e.g. CONDUIT_IMPORTER_PROVIDER_RATES='{"demo": 20}'.
    importer_provider_rates: dict[str, float] = Field(default_factory=dict)
    # How long to wait before trying again when the tenant is at its limit (jittered).
    importer_busy_defer: float = Field(default=0.5, gt=0)
    # The importer's database pool (at least IMPORTER_MAX_JOBS + 2: every running import holds a connection).
    importer_db_pool_size: int = Field(default=12, ge=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        old = _OldWorkerNames(settings_cls)
        return init_settings, env_settings, old, dotenv_settings, file_secret_settings
