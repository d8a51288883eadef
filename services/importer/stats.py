"""What one run records: the path it took, what its stages counted, and their time; the ledger stores it.

No stage writes here. The load and merge stages return what they counted
(``csv_copy.Copied``, ``merge.Merged``); a streaming stage (fetch, unzip,
validate) counts into a :class:`Tally` it is handed, the only writer of it,
because a download or a parse can fail half way and the ledger still records
how far it got; the pipeline puts the results together in a :class:`RunRecord`
and turns that into the ledger's :class:`Outcome`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from services.importer.errors import ImportFailed, TooManyRejects


class ImportPath(enum.Enum):
    """How the rows went in (docs/importer.md, "The paths"); the value is the ledger's ``parse_path`` text."""

    FIRST_LOAD = "first load"  # PostgreSQL parsed the CSV, COPY straight into the table: the tenant had no rows
    FAST = "fast"  # PostgreSQL parsed the CSV into staging, one MERGE
    SWAP = "swap"  # a full snapshot COPYed into a new table that replaced the tenant's partition (swap.py)
    CAREFUL = "careful"  # aiocsv in the worker, every record checked; the fast path gave up first


@dataclass(frozen=True)
class PathTaken:
    """The path, and what the ledger says with it: why the fast path gave up, or how many records it re-quoted."""

    path: ImportPath
    why: str = ""
    requoted: int = 0

    def __str__(self) -> str:
        """The ``parse_path`` text operators, the console and earlier rows know (``careful: <why>``, ...)."""
        if self.path is ImportPath.CAREFUL:
            return f"careful: {self.why}"[:300]
        name: str = self.path.value
        return name + (f" ({self.requoted} records re-quoted for COPY)" if self.requoted else "")


class Timings:
    """Seconds per stage of one run.

    One object every stage is handed, rather than a timer per stage: the stages interleave (each pulls
    from the one before), so each times only its own work, and the parser's clock subtracts what the
    stages upstream of it charged meanwhile (csv_stream._Clock), which needs them in one place.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the time spent inside the block to ``stage``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        """Seconds per stage, and ``total`` since the run started."""
        total = {"total": time.perf_counter() - self.started}
        return {stage: round(value, 3) for stage, value in (self.seconds | total).items()}


@dataclass
class Tally:
    """A running count a streaming stage keeps as data passes through it (bytes, records)."""

    n: int = 0


@dataclass(frozen=True)
class Merged:
    """What a merge (or a first load's COPY) did to the module's table."""

    changed: int = 0
    deleted: int = 0
    duplicate: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class Outcome:
    """The counts of one attempt as the ledger (and the progress events) store them."""

    rows_read: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    rows_changed: int = 0
    rows_deleted: int = 0
    bytes_received: int = 0
    bytes_csv: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    parse_path: str | None = None

    @property
    def rows_imported(self) -> int:
        return self.rows_read - self.rows_rejected - self.rows_duplicate


@dataclass
class RunRecord:
    """One run as far as it got, kept by the pipeline: the streaming stages' tallies and the stage results."""

    timings: Timings = field(default_factory=Timings)
    received: Tally = field(default_factory=Tally)  # the proxy's answer, as it arrives (fetch)
    csv: Tally = field(default_factory=Tally)  # the CSV's bytes in the read that loads it (unzip)
    read: Tally = field(default_factory=Tally)  # records read: validate's, or the count COPY returned
    ignored_columns: list[str] = field(default_factory=list)
    path: PathTaken | None = None
    merged: Merged = Merged()

    def restart(self) -> None:
        """Forget what a load that gave up counted; the careful path reads the file again."""
        self.csv, self.read, self.merged = Tally(), Tally(), Merged()

    def outcome(self, error: ImportFailed | None = None) -> Outcome:
        """The ledger's counts; a run failed past the reject threshold still says how many rows were bad."""
        rejected = error.rejected if isinstance(error, TooManyRejects) else self.merged.rejected
        return Outcome(
            rows_read=self.read.n,
            rows_rejected=rejected,
            rows_duplicate=self.merged.duplicate,
            rows_changed=self.merged.changed,
            rows_deleted=self.merged.deleted,
            bytes_received=self.received.n,
            bytes_csv=self.csv.n,
            seconds=self.timings.rounded(),
            ignored_columns=self.ignored_columns,
            parse_path=str(self.path) if self.path else None,
        )
