"""A first record that arrives in many pieces is parsed a few times, not once per piece, and never held whole.

The header is parsed from what has arrived of the zip (zip_stream.Streamed), from its first byte each time
(aiocsv cannot be left waiting on the network), and each piece more meant one more parse: a careless export
whose first line runs on for megabytes (one line, no line end) cost a parse of everything so far per piece,
quadratic in the pieces, and sat in memory whole. The head now at least doubles between two parses, and past
``HEAD_LIMIT`` the stream gives up to zipfile's read of the spool, which must give the same outcome.
"""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from services.importer import zip_stream
from services.importer.archive import ZipLimits
from services.importer.pipeline import _header
from services.importer.settings import ImporterSettings
from services.importer.stats import Tally, Timings
from services.importer.zip_stream import Streamed
from tests.importer.conftest import LoopDb
from tests.importer.test_csv_paths import HEADER, MODULE, Cut, _import

LIMITS = ZipLimits(1 << 30, 1 << 30, 1e6)


class _Counted(Streamed):
    parses = 0

    def head(self, size: Tally) -> AsyncIterator[bytes]:
        self.parses += 1
        return super().head(size)


async def _parses(data: bytes, piece: int) -> tuple[list[str], int]:
    cut = Cut(head=piece, size=piece, stored=True)
    stream = zip_stream.ZipStream(cut.pieces(data), io.BytesIO(), LIMITS, Timings())
    source = _Counted(stream, io.BytesIO(), LIMITS, Timings())
    run = SimpleNamespace(timings=Timings(), module=MODULE, settings=ImporterSettings())
    try:
        header, _ = await _header(run, source)  # type: ignore[arg-type]
    finally:
        await stream.aclose()
    return header, source.parses


@pytest.mark.parametrize("fields", [10, 2_000, 50_000])
async def test_a_long_first_record_is_parsed_a_few_times(fields: int) -> None:
    data = b",".join(b"c%d" % i for i in range(fields)) + b"\n1,2\n"
    header, parses = await _parses(data, 64)
    assert header == [f"c{i}" for i in range(fields)]
    # Found at fb54f9a: one parse per 64-byte piece (4,400 for the 50,000 fields).
    assert parses <= 2 * math.log2(max(len(data) / 64, 1)) + 3, parses


def test_a_first_record_past_the_limit_is_read_from_the_spool_alike(
    loop_db: LoopDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ImporterSettings(importer_temp_dir=tmp_path)
    data = HEADER + b"".join(b",Other %d" % i for i in range(500)) + b"\n1,a,1,2024-05-01" + b",x" * 500 + b"\n"
    cut = Cut(head=100, size=100, stored=True)
    streamed = loop_db.run(_import(loop_db.conn, config, data, "streamed", cut=cut))
    monkeypatch.setattr(zip_stream, "HEAD_LIMIT", 1000)
    with capture_logs() as logs:
        spooled = loop_db.run(_import(loop_db.conn, config, data, "spooled", cut=cut))
    assert [e["why"] for e in logs if e["event"] == "import reads the spooled zip"] == [
        "the CSV's first record is longer than 1000 bytes"
    ]
    assert streamed["status"] == "succeeded" and len(streamed["table"]) == 1
    assert spooled == streamed
