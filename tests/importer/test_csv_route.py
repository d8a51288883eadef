"""The careful path's byte-level router (csv_route.py) against the careful parser, without a database.

For generated hostile files (tests/importer/csv_strategies.py) in any chunking, wherever the router does
not give up (NotDirect):

- the doubtful records it keeps aside start on the lines aiocsv gives them, and read as aiocsv reads them;
- the sure records' bytes read (Python's csv module) as the records aiocsv reads on the other lines, in order;
- every sure value matches its column's "surely fits" pattern (careful_copy.SURE), no required one is
  empty, none holds a NUL (what COPY then makes of them is test_careful_copy.py's, against PostgreSQL).
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.importer.careful_copy import SURE, NotDirect
from services.importer.csv_route import RecordRouter
from services.importer.csv_stream import CsvRecords
from services.importer.errors import BadExport
from services.importer.merge import MergePlan
from services.importer.stats import Timings
from services.importer.validate import plan_layout
from shared.modules import catalogue
from tests.importer.csv_strategies import csv_file

MODULE = catalogue().get("transactions")
LIMIT = 40
HEADER = b"Transaction ID,account_code,amount,value_date"


async def _texts(text: str) -> AsyncIterator[str]:
    yield text


async def _aiocsv(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    records = CsvRecords(_texts(text), 3, LIMIT)
    header = await records.header()
    out = []
    async for batch in records.batches(Timings()):
        out.extend(zip(batch.lines, batch.records, strict=True))
    return header, out


def _route(data: bytes, plan: MergePlan, size: int) -> tuple[bytes, list[tuple[int, bytes]]]:
    router = RecordRouter(plan, LIMIT)
    sure, doubtful = [], []
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    for i, piece in enumerate([*pieces, b""]):
        sure.append(router.feed(piece, final=i == len(pieces)))
        taken = router.take_doubtful()
        doubtful.extend(zip(taken.lines, taken.spans, strict=True))
    return b"".join(sure), doubtful


def _sure_values_fit(records: list[list[str]], plan: MergePlan) -> None:
    for record in records:
        assert len(record) == len(plan.columns)
        for name, value in zip(plan.columns, record, strict=True):
            column = plan.module.column(name)
            assert "\x00" not in value
            if plan.module.is_required(column):
                assert value != "", name
            if column.type != "text" and value:
                assert re.fullmatch(SURE[column.type], value), (name, value)


@pytest.mark.timeout(300)
@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(data=csv_file(), size=st.integers(1, 80))
@example(data=HEADER + b"\r1,a,1,2024-05-01\r\r\r2,b,x,2024-05-01\r", size=80)  # blank CR lines: aiocsv's count
@example(data=HEADER + b"\r\n1,a,1,2024-05-01\r\n\r\n2,b,x,2024-05-01", size=3)
@example(data=HEADER + b'\n1,a,"1\n2",2024-05-01\n2,"b\r\nc",1,2024-05-01\n3,,1,2024-05-01\n', size=7)
def test_the_router_splits_records_as_the_careful_parser_reads_them(data: bytes, size: int) -> None:
    if b"\xff" in data:
        return  # not UTF-8: the whole careful path reads it again (test_csv_paths.py)
    text = data.decode().removeprefix("\ufeff")
    try:
        header, expected = asyncio.run(_aiocsv(text))
    except BadExport:
        return  # a field past the limit: the router gives that up too (checked by the pipeline tests)
    layout = plan_layout(MODULE, header)
    if layout.ignored:
        return  # the pipeline reads such a file by the text path (careful_copy.py)
    plan = MergePlan(MODULE, layout.columns)
    try:
        sure, doubtful = _route(data, plan, size)
    except NotDirect:
        return
    lines = {line for line, _ in doubtful}
    by_line = dict(expected)
    for line, span in doubtful:
        assert line in by_line, (line, span, expected)
        assert list(csv.reader(io.StringIO(span.decode(), newline=""))) == [by_line[line]]
    sure_records = list(csv.reader(io.StringIO(sure.decode(), newline="")))
    assert sure_records == [record for line, record in expected if line not in lines]
    _sure_values_fit(sure_records, plan)
