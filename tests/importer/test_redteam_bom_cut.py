"""A UTF-8 byte order mark means UTF-8 whatever the module's encoding, wherever the download happens to be cut.

The zip's member is read while it arrives (zip_stream.py), in the pieces it arrived in; a stored member's
bytes are the download's own. The decoder looked for the mark in its first piece only, so a first piece of
one or two bytes read the file in the module's encoding: for the Windows-1252 module, ``Müller`` was stored
as ``MÃ¼ller`` and the run succeeded (its first column, with the mark's bytes in its name, was ignored), or
the header lacked its first column and a good file failed.

Each generated file (the legacy module's columns in any order, names with umlauts, a mark or not) is
imported by the fast and the careful path, its zip cut after the local header and ``head`` bytes of the
member, then in pieces of ``size``: the table must hold the file's text, decoded as UTF-8 when it has
the mark and as Windows-1252 when not.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
from pathlib import Path

import asyncpg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.importer import ledger
from services.importer.errors import ImportFailed
from services.importer.pipeline import Run, import_download
from services.importer.settings import ImporterSettings
from services.importer.stats import RunRecord
from services.importer.validate import Rejects
from shared.modules import catalogue
from tests.importer.conftest import DB_EXAMPLES, LoopDb
from tests.importer.test_csv_paths import Cut, _Quiet

MODULE = catalogue().get("legacy_customers")
NAMES = ["Müller", "Jörg Weiß", "plain", "Ærø"]
_tenants = itertools.count()


def _file(order: list[str], names: list[str], bom: bool) -> bytes:
    values = {"Kundennummer": lambda i, _: str(i), "Name": lambda _, n: n, "Ort": lambda _, n: f"{n} Straße"}
    lines = [",".join(order)] + [",".join(values[c](i, n) for c in order) for i, n in enumerate(names, 1)]
    text = "\n".join(lines) + "\n"
    return b"\xef\xbb\xbf" + text.encode() if bom else text.encode("cp1252")


async def _import(conn: asyncpg.Connection, config: ImporterSettings, data: bytes, cut: Cut) -> list[tuple[str, ...]]:
    tenant = f"t{next(_tenants)}"
    key = ledger.RunKey(tenant, MODULE.name, dt.date(2024, 5, 1))
    attempt = await ledger.start_attempt(conn, key, f"job:{tenant}", "test")
    rejects = Rejects(config.importer_rejects_kept, config.importer_reject_raw_chars)
    run = Run(config, None, conn, MODULE, key, attempt, _Quiet(), RunRecord(), rejects)  # type: ignore[arg-type]
    try:
        status = await import_download(run, cut.pieces(data), io.BytesIO())
    except ImportFailed as exc:
        raise AssertionError(f"the import failed: {exc}") from None
    assert status == "succeeded"
    rows = await conn.fetch(
        "SELECT customer_no::text, name, coalesce(city, '') FROM legacy_customers WHERE tenant_id = $1 "
        "ORDER BY customer_no",
        tenant,
    )
    return [tuple(r) for r in rows]


@pytest.mark.timeout(120)
def test_a_byte_order_mark_cut_by_the_download_still_means_utf8(loop_db: LoopDb, tmp_path: Path) -> None:
    fast = ImporterSettings(importer_temp_dir=tmp_path)
    careful = fast.model_copy(update={"importer_fast_path": False})

    @settings(DB_EXAMPLES, max_examples=25)
    @given(
        order=st.permutations(["Kundennummer", "Name", "Ort"]),
        names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=3),
        bom=st.booleans(),
        cut=st.builds(Cut, st.integers(0, 4), st.integers(1, 8), st.booleans()),
    )
    # Found at fb54f9a: the mark cut after its first byte, its column ignored: MÃ¼ller stored, the run succeeded.
    @example(order=["Ort", "Kundennummer", "Name"], names=["Müller"], bom=True, cut=Cut(head=1, stored=True))
    @example(order=["Kundennummer", "Name", "Ort"], names=["Müller"], bom=True, cut=Cut(head=2, stored=True))
    def check(order: list[str], names: list[str], bom: bool, cut: Cut) -> None:
        data = _file(order, names, bom)
        expected = [(str(i), n, f"{n} Straße") for i, n in enumerate(names, 1)]
        for config in (fast, careful):
            assert loop_db.run(_import(loop_db.conn, config, data, cut)) == expected, (data, cut, config)

    check()
