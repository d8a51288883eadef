"""An export with bad rows for `bench importer`'s `rejects` row, and the same file with them removed for psql.

One data row in 200 (0.5%) is spoiled, in turn: a field short (ragged), a NUL in the memo, a quantity that
is not an integer, a value date that does not exist. The first two the worker rejects as it parses; the last
two only PostgreSQL's casts can refuse. Both files are built once from the clean export and reused.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

EVERY = 200
_KINDS = ("ragged", "nul", "integer", "date")


def spoil(record: list[str], header: list[str], kind: str) -> list[str]:
    """``record`` made bad in the way ``kind`` names."""
    bad = list(record)
    if kind == "ragged":
        return bad[:-1]
    column = {"nul": "memo", "integer": "quantity", "date": "value_date"}[kind]
    index = header.index(column)
    bad[index] = {"nul": f"{bad[index]}\x00x", "integer": "12x", "date": "2024-02-30"}[kind]
    return bad


def build(clean_csv: Path, zipped: Path, clean_out: Path, member: str) -> int:
    """Write the spoiled export as ``zipped`` and the clean rows alone as ``clean_out``; returns the bad rows."""
    if zipped.exists() and clean_out.exists():
        return _count(clean_csv)
    bad_rows = 0
    part = zipped.with_suffix(".part")
    with (
        clean_csv.open(newline="", encoding="utf-8") as src,
        clean_out.open("w", newline="", encoding="utf-8") as kept,
        zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive,
        archive.open(member, "w", force_zip64=True) as raw,
    ):
        reader = csv.reader(src)
        header = next(reader)
        out = csv.writer(_Text(raw))
        good = csv.writer(kept)
        out.writerow(header)
        good.writerow(header)
        for i, record in enumerate(reader):
            if i % EVERY == EVERY - 1:
                out.writerow(spoil(record, header, _KINDS[bad_rows % len(_KINDS)]))
                bad_rows += 1
            else:
                out.writerow(record)
                good.writerow(record)
    part.replace(zipped)
    return bad_rows


def _count(clean_csv: Path) -> int:
    with clean_csv.open(newline="", encoding="utf-8") as src:
        return (sum(1 for _ in csv.reader(src)) - 1) // EVERY


class _Text:
    """csv.writer's file: text encoded to UTF-8 into the zip member."""

    def __init__(self, raw: object) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        return self._raw.write(text.encode())  # type: ignore[attr-defined, no-any-return]
