"""The swap against the MERGE on a tenant's rows of yesterday: a value equal to yesterday's but written
otherwise (``9.990`` for ``9.99``: numeric keeps its scale) must leave the table as the other paths leave it.

test_csv_paths.compare imports one file by every path (first load, fast MERGE, careful, swap; empty and
seeded) and compares ledgers, rejects and tables as text; here the files write the seeded row again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conduit.db_cli import apply_migrations, read_migrations
from services.importer.settings import ImporterSettings
from shared.db import create_pool
from tests.importer.conftest import MIGRATIONS, drop_schema, fresh_schema
from tests.importer.test_csv_paths import HEADER, compare

_AMOUNTS = st.sampled_from(["9.99", "9.990", "9.9900", "09.99", "+9.99", "9.99e0", "999e-2", "10", "9.99000000000"])


@pytest.mark.timeout(300)
def test_the_seeded_row_written_again_otherwise_leaves_every_path_the_same_table(
    database_url: str, tmp_path: Path
) -> None:
    config = ImporterSettings(database_url=database_url, importer_temp_dir=tmp_path, importer_copy_chunk_rows=3)
    loop = asyncio.new_event_loop()
    schema, url = loop.run_until_complete(fresh_schema(database_url))
    pool = loop.run_until_complete(create_pool(url, min_size=1, max_size=1))
    conn = loop.run_until_complete(pool.acquire())
    try:
        loop.run_until_complete(apply_migrations(conn, read_migrations(MIGRATIONS)))

        @settings(
            max_examples=15,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(amount=_AMOUNTS, account=st.sampled_from(["seed", "other"]))
        @example(amount="9.990", account="seed")
        def check(amount: str, account: str) -> None:
            data = HEADER + f"\n999999,{account},{amount},2020-01-01\n1,a,1,2024-05-01\n".encode()
            loop.run_until_complete(compare(conn, config, data))

        check()
    finally:
        loop.run_until_complete(pool.release(conn))
        loop.run_until_complete(pool.close())
        loop.run_until_complete(drop_schema(database_url, schema))
        loop.close()
