"""The names and ids of arq jobs, the contract between the scheduler (which enqueues) and the importers (which run).

Job ids are deterministic, so every scheduler replica enqueueing the same work
produces the same id and arq keeps only one.
"""

from __future__ import annotations

REFRESH_TOKEN = "refresh_token"


def refresh_job_id(tenant: str, provider: str, due: float | None) -> str:
    """One id per scheduled refresh: the due time moves whenever the record changes."""
    stamp = "init" if due is None else str(int(due * 1000))
    return f"refresh:{tenant}:{provider}:{stamp}"


IMPORT_EXPORT = "import_export"


def import_job_id(tenant: str, module: str, export_date: str) -> str:
    """The scheduled import of one module's export for one tenant and day (``export_date``: YYYY-MM-DD)."""
    return f"import:{tenant}:{module}:{export_date}"
