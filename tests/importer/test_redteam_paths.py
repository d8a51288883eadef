"""The swap against the MERGE on a tenant's rows of yesterday: a value equal to yesterday's but written
otherwise (``9.990`` for ``9.99``: numeric keeps its scale) must leave the table as the other paths leave it.

test_csv_paths.compare imports one file by every path (first load, fast MERGE, careful, swap; empty and
seeded) and compares ledgers, rejects and tables as text; here the files write the seeded row again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.importer.settings import ImporterSettings
from tests.importer.conftest import DB_EXAMPLES, LoopDb
from tests.importer.test_csv_paths import HEADER, compare

_AMOUNTS = st.sampled_from(["9.99", "9.990", "9.9900", "09.99", "+9.99", "9.99e0", "999e-2", "10", "9.99000000000"])


@pytest.mark.timeout(300)
def test_the_seeded_row_written_again_otherwise_leaves_every_path_the_same_table(
    loop_db: LoopDb, database_url: str, tmp_path: Path
) -> None:
    config = ImporterSettings(database_url=database_url, importer_temp_dir=tmp_path, importer_copy_chunk_rows=3)

    @settings(DB_EXAMPLES, max_examples=15)
    @given(amount=_AMOUNTS, account=st.sampled_from(["seed", "other"]))
    @example(amount="9.990", account="seed")
    def check(amount: str, account: str) -> None:
        data = HEADER + f"\n999999,{account},{amount},2020-01-01\n1,a,1,2024-05-01\n".encode()
        loop_db.run(compare(loop_db.conn, config, data))

    check()
