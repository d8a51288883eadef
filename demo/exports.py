"""The demo third party's daily exports: deterministic CSV files for every module of the catalogue.

The same (client, module, date, rows) always gives the same bytes, so a daily
cycle can be run, repeated and compared locally. Text columns carry what real
exports carry and CSV code gets wrong: commas, quotes, line breaks and
non-ASCII letters; optional columns are empty now and then.

Building a large export takes a while in Python, so finished zips are kept in a
cache directory and served from there (the benchmarks time the importer, not this).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO

from shared.modules import Column, ModuleDef

_WORDS = (
    "invoice", "Müller", "Zoë", "naïve", "São Paulo", "Łódź", "Ærøskøbing", "straße", "café", "€ 12",
    "quarterly", "north", "south", "consulting", "hardware", "licence", "travel", "office", "misc",
    "refund", "discount", "delivery", "service", "support", "annual", "fee", "rent", "power",
)  # fmt: skip
_TRICKY = (
    'said "hello", then left',
    "first line\nsecond line",
    'comma, "quote" and\r\nCRLF',
    "tab\there",
    "日本語のテキスト",
    "emoji 🚀 inside",
    '""',
    " leading and trailing spaces ",
)
# Windows-1252 cannot hold every character above; its modules get these instead.
_LATIN = ("Müller", "Straße", "café", "Zoë", "naïve", "Ærøskøbing", "€ 12", 'quote "x", comma')
_EPOCH = date(2020, 1, 1)
_NULL_SHARE = 0.08
_TRICKY_SHARE = 0.05
_POOL_BITS = 12
_POOL = 1 << _POOL_BITS
# Part of every cached file's name: bump it when the generated data changes.
_VERSION = 2


def seed(client: str, module: str, export_date: str) -> int:
    """A stable seed: Python's hash() is salted per process, so the digest of the names is used."""
    return int.from_bytes(hashlib.sha256(f"{client}/{module}/{export_date}".encode()).digest()[:8], "big")


def rows(module: ModuleDef, client: str, export_date: str, count: int) -> Iterator[list[str]]:
    """``count`` rows of ``module`` as CSV field strings ("" is null), keys 1..count in order."""
    rng = random.Random(seed(client, module.name, export_date))
    latin = module.encoding not in ("utf-8", "utf-16", "utf-32")
    makers = [_maker(module, column, rng, latin) for column in module.columns]
    for index in range(count):
        yield [make(index) for make in makers]


def _maker(module: ModuleDef, column: Column, rng: random.Random, latin: bool) -> Callable[[int], str]:
    if column.name in module.key:
        position = module.key.index(column.name)
        return _key_maker(column, position, len(module.key))
    # Values are drawn from a pool made once per export: a million rows take seconds, not a minute.
    value = _value_maker(column, rng, latin)
    nulls = 0.0 if module.is_required(column) else _NULL_SHARE
    pool = ["" if rng.random() < nulls else value() for _ in range(_POOL)]
    bits = rng.getrandbits
    return lambda _: pool[bits(_POOL_BITS)]


def _key_maker(column: Column, position: int, width: int) -> Callable[[int], str]:
    # Composite keys: the first column counts rows in groups of 3, the others number inside a group.
    def part(i: int) -> int:
        return i // 3 + 1 if width > 1 and position == 0 else (i % 3 + 1 if width > 1 else i + 1)

    if column.type == "date":
        return lambda i: (_EPOCH + timedelta(days=part(i))).isoformat()
    if column.type == "text":
        return lambda i: f"{column.name[:3].upper()}-{part(i):08d}"
    return lambda i: str(part(i))


def _value_maker(column: Column, rng: random.Random, latin: bool) -> Callable[[], str]:
    kind = column.type
    if kind == "text":
        return lambda: _text(rng, latin)
    if kind in ("integer", "bigint"):
        top = 100_000 if kind == "integer" else 10**12
        return lambda: str(rng.randint(-top // 100, top))
    if kind == "numeric":
        return lambda: f"{rng.uniform(-50_000, 250_000):.2f}"
    if kind == "boolean":
        return lambda: "true" if rng.random() < 0.5 else "false"
    if kind == "date":
        return lambda: (_EPOCH + timedelta(days=rng.randint(0, 2500))).isoformat()
    if kind == "timestamptz":
        base = datetime(2020, 1, 1, tzinfo=UTC)
        return lambda: (base + timedelta(seconds=rng.randint(0, 200_000_000))).isoformat()
    return lambda: f'{{"n": {rng.randint(0, 999)}, "tags": ["{rng.choice(_WORDS)}"], "ok": true}}'


def _text(rng: random.Random, latin: bool) -> str:
    if rng.random() < _TRICKY_SHARE:
        return rng.choice(_LATIN if latin else _TRICKY)
    words = _LATIN if latin else _WORDS
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))


def write_csv(module: ModuleDef, client: str, export_date: str, count: int, out: IO[bytes]) -> None:
    """The export's CSV, as the third party writes it: header of CSV names, CRLF line ends, quoted as needed."""
    text = io.TextIOWrapper(out, encoding=module.encoding, errors="replace", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow([c.csv_header for c in module.columns])
    batch: list[list[str]] = []
    for row in rows(module, client, export_date, count):
        batch.append(row)
        if len(batch) == 10_000:
            writer.writerows(batch)
            batch.clear()
    writer.writerows(batch)
    text.flush()
    text.detach()


def cache_path(module: ModuleDef, client: str, export_date: str, count: int, cache: Path) -> Path:
    """Where :func:`build_zip` keeps the export (a file put there first is served as it is)."""
    return cache / f"v{_VERSION}-{client}-{module.name}-{export_date}-{count}.zip"


def build_zip(module: ModuleDef, client: str, export_date: str, count: int, cache: Path) -> Path:
    """The export as a zip holding one CSV, built once into ``cache`` and reused."""
    path = cache_path(module, client, export_date, count, cache)
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".part")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            with archive.open(f"{module.name}.csv", "w", force_zip64=True) as member:
                write_csv(module, client, export_date, count, member)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a zip
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
