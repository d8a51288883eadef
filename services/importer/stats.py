"""What one run counts and times as its stages pass data along; the ledger stores it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class RunStats:
    """Counters every stage adds to; the merge fills in what only it knows."""

    bytes_received: int = 0
    bytes_zip: int = 0
    bytes_csv: int = 0
    rows_read: int = 0
    rows_staged: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    rows_changed: int = 0
    rows_deleted: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    # Set by the text decoder as soon as it sees a NUL, which PostgreSQL text cannot hold; only then
    # does the validator look for NULs row by row (a per-field scan would cost a second per million rows).
    saw_nul: bool = False
    # The encoding the file was read in: the module's, or UTF-8 when the file starts with a UTF-8 BOM.
    encoding: str = "utf-8"
    # Records the fast path wrote again (re-quoted) so that COPY reads them as the careful parser does.
    requoted: int = 0
    # How the rows went in: "fast" (PostgreSQL parsed the CSV) or "careful: <why the fast path gave up>".
    path: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the time spent inside the block to ``stage`` (stages interleave, so each times its own work)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def restart_staging(self) -> None:
        """Forget what a fast path that gave up counted; the careful path reads the file again."""
        self.bytes_csv = self.rows_read = self.rows_staged = self.rows_changed = self.rows_deleted = 0
        self.requoted = 0

    @property
    def rows_imported(self) -> int:
        return self.rows_read - self.rows_rejected - self.rows_duplicate

    def rounded_seconds(self) -> dict[str, float]:
        """Seconds per stage, and ``total`` since the run started."""
        total = {"total": time.perf_counter() - self.started}
        return {stage: round(value, 3) for stage, value in (self.seconds | total).items()}
