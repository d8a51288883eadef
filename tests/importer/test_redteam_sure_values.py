"""careful_copy.py's patterns against PostgreSQL's own input functions, with the near misses an attacker or a
careless exporter writes: unicode digits, odd whitespace, exponents, NaN/Infinity, signs, leading zeros,
words PostgreSQL reads as dates or booleans, numbers at the types' limits.

For every value a pattern vouches for, the row ``csv_lines`` writes and COPY reads must hold what the
careful path's cast (``NULLIF(value, '')::type``) gives; text beside it must come back as it went in (quotes,
commas, line ends, a ``\\.`` line, leading spaces), and an empty value as NULL on both sides.
"""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.importer.careful_copy import SURE, csv_lines

_HYPOTHESIS = settings(
    max_examples=60,  # test_careful_copy holds the same patterns to PostgreSQL with 150
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KINDS = sorted(SURE)
_NEAR = [
    "٣", "３", "1٣", "¹", "Ⅻ", "1\u00a0", "\u20031", " 1", "1 ", "\t1", "1\n", "+1", "--1", "1-", "0x1F", "1_000",
    "1e3", "1E-3", "1.", ".5", "-.5", "NaN", "nan", "Infinity", "-Infinity", "inf", "007", "-0", "-000000000",
    "2147483647", "2147483648", "-2147483648", "-2147483649", "999999999", "-999999999", "1000000000",
    "999999999999999999", "9223372036854775807", "9223372036854775808", "-999999999999999999",
    "999999999999999.999999999999999", "0.000000000000001", "t", "f", "TRUE", "yes", "on", "1", "0", "tru",
    "2024-02-29", "2023-02-29", "1900-02-29", "2000-02-29", "0000-01-01", "0001-01-01", "9999-12-31", "2024-1-5",
    "20240105", "epoch", "today", "infinity", "2024-05-01 BC", "2024-05-01T24:00:00", "2024-05-01T23:59:60",
    "2024-05-01T10:00:00+14:59", "2024-05-01T10:00:00+15:00", "2024-05-01T10:00:00-1459", "2024-05-01 10:00:00Z",
    "2024-05-01T10:00:00.123456", "2024-05-01T10:00:00.1234567", "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00", "2024-05-01T10:00:00z", "2024-05-01t10:00:00", "2024-05-01T10:00", "",
]  # fmt: skip


def _values(kind: str) -> st.SearchStrategy[str]:
    sure = st.from_regex(re.compile(f"(?:{SURE[kind]})"), fullmatch=True)
    mutated = st.tuples(sure, st.sampled_from(["", " ", "\u00a0", "٣", "e1", "0", "\n", "."]), st.integers(0, 40))
    return st.one_of(sure, st.sampled_from(_NEAR), mutated.map(lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]))


_TEXTS = st.one_of(
    st.text(st.characters(exclude_characters="\x00"), max_size=12),
    st.sampled_from(["", " ", '"', '""', ",", "\n", "\r\n", "\r", "\\.", "a\n\\.\nb", "\\N", "NULL", ' "x"']),
)


async def _compare(conn: asyncpg.Connection, kind: str, pairs: list[tuple[str, str]]) -> None:
    sure = re.compile(f"(?:{SURE[kind]})").fullmatch
    vouched = [(value, text) for value, text in pairs if value == "" or sure(value)]
    if not vouched:
        return
    async with conn.transaction():
        await conn.execute(f"CREATE TEMP TABLE sure (n integer, v {kind}, t text) ON COMMIT DROP")
        numbers = [str(i) for i in range(len(vouched))]
        columns = [numbers, [v for v, _ in vouched], [t for _, t in vouched]]
        data = csv_lines(columns, [2], set()).encode()

        async def source() -> object:
            yield data

        await conn.copy_to_table("sure", source=source(), format="csv", force_null=["n", "v", "t"])
        read = await conn.fetch("SELECT n, v::text AS v, t FROM sure ORDER BY n")
        cast = await conn.fetch(
            f"SELECT n - 1 AS n, NULLIF(v, '')::{kind}::text AS v, NULLIF(t, '') AS t "
            "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(v, t, n) ORDER BY n",
            [v for v, _ in vouched],
            [t for _, t in vouched],
        )
    assert [tuple(r) for r in read] == [tuple(r) for r in cast]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", KINDS)
def test_what_a_pattern_vouches_for_copy_reads_as_the_cast_does(database_url: str, kind: str) -> None:
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(database_url))
    try:

        @_HYPOTHESIS
        @given(pairs=st.lists(st.tuples(_values(kind), _TEXTS), min_size=1, max_size=30))
        @example(pairs=[(v, "x") for v in _NEAR])
        def check(pairs: list[tuple[str, str]]) -> None:
            loop.run_until_complete(_compare(conn, kind, pairs))

        check()
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
