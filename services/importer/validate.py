"""Stage 5, validate: map the file's header onto the module, then keep well-formed records and reject the rest.

What is checked here is what only the file's shape can tell: required columns
missing from the header (the run fails, naming them), columns the module does
not know (ignored and reported), records with more or fewer fields than the
header, and NUL characters. Whether a value fits its type is decided by
PostgreSQL's own casts in the merge, which cost nothing when every value fits;
converting in Python costs seconds per million rows (the csv module feeding
typed records to COPY took 13 s where raw bytes to COPY took 7, docs/benchmarks.md)
and would be a second definition of validity to keep in line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.importer.csv_stream import Batch, TextSeen
from services.importer.errors import BadExport
from services.importer.stats import Tally, Timings
from shared.modules import ModuleDef

Row = list[object]


@dataclass(frozen=True)
class Layout:
    """How a file's columns map onto its module: which are staged (in file order), which ignored."""

    columns: list[str]
    positions: list[int]
    width: int
    ignored: list[str]

    @property
    def reorders(self) -> bool:
        """Whether records must be cut down to ``positions`` (only when the file has columns to ignore)."""
        return len(self.positions) != self.width


def plan_layout(module: ModuleDef, header: list[str]) -> Layout:
    """Match header names to the module's CSV names (then column names, then ignoring case)."""
    by_name: dict[str, str] = {}
    for column in module.columns:
        for alias in (column.csv_header, column.name):
            by_name.setdefault(alias, column.name)
            by_name.setdefault(alias.casefold(), column.name)
    columns, positions, ignored = [], [], []
    for index, raw in enumerate(header):
        name = raw.strip()
        match = by_name.get(name) or by_name.get(name.casefold())
        if match is None:
            ignored.append(name)
            continue
        if match in columns:
            raise BadExport("duplicate_column", f"the header names column {match!r} twice")
        columns.append(match)
        positions.append(index)
    missing = [c for c in module.columns if module.is_required(c) and c.name not in columns]
    if missing:
        names = ", ".join(repr(c.csv_header) for c in missing)
        raise BadExport("missing_columns", f"the file lacks required column(s) {names}; its header is {header!r}")
    return Layout(columns, positions, len(header), ignored)


@dataclass(frozen=True)
class Reject:
    line: int
    column: str | None
    reason: str
    raw: str


@dataclass
class Rejects:
    """Rejected rows: all counted, the first ``keep`` kept with their raw text (cut to ``raw_chars``)."""

    keep: int
    raw_chars: int
    count: int = 0
    kept: list[Reject] = field(default_factory=list)

    def clear(self) -> None:
        """Forget every reject (the careful path reads the file again from its start)."""
        self.count = 0
        self.kept.clear()

    def add(self, line: int, column: str | None, reason: str, record: list[str]) -> None:
        self.count += 1
        if len(self.kept) < self.keep:
            self.kept.append(Reject(line, column, reason, as_csv(record)[: self.raw_chars]))


def as_csv(record: list[str]) -> str:
    """A record as one CSV line again (the raw text of a rejected row, re-quoted; NUL shown as U+FFFD)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(record)
    return out.getvalue().replace("\x00", "\ufffd")


async def validate(
    batches: AsyncIterator[Batch], layout: Layout, rejects: Rejects, seen: TextSeen, timings: Timings, read: Tally
) -> AsyncIterator[list[Row]]:
    """Rows for the staging table: the staged fields, then a running row number and the line number.

    Every record parsed is counted into ``read``, rejected or not.
    """
    n = 0
    width = layout.width
    positions = layout.positions if layout.reorders else None
    async for batch in batches:
        with timings.timed("validate"):
            rows: list[Row] = []
            for line, record in zip(batch.lines, batch.records, strict=True):
                if len(record) != width:
                    rejects.add(line, None, f"{len(record)} fields where the header has {width}", record)
                    continue
                if seen.saw_nul and "\x00" in "".join(record):  # one C-speed join, not a generator per record
                    rejects.add(line, None, "contains a NUL character, which PostgreSQL text cannot hold", record)
                    continue
                row: Row = [record[i] for i in positions] if positions is not None else record  # type: ignore[assignment]
                n += 1
                row.append(n)
                row.append(line)
                rows.append(row)
            read.n += len(batch)
        if rows:
            yield rows
