"""The daily re-import of a module that keeps missing rows (issue 12): the fast path's write against psql \\copy.

`transactions` as shipped (``missing_rows: keep``, not partitioned): day 1 into an empty table, day 1 again,
day 2 (every row changed), then day 2 with 1% of day 1's rows (1% changed). Every import is paired with psql
\\copy of the same CSV into an empty table, order alternating; the table is emptied before each repetition.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from bench import importer as b
from bench._importer_daily import SCENARIOS, paired_scenarios

_NAMES = {"first": "first load", "again": "same export again", "all_changed": "next day, all changed",
          "one_percent": "next day, 1% changed"}  # fmt: skip


async def keep(stack: b._Stack, opts: argparse.Namespace) -> dict[str, Any]:
    """Each scenario ``opts.repeat`` times, paired with psql."""
    stack.serve_exports(0, {b.MODULE: opts.rows})
    await b._sql(stack, b._comparison_tables())
    runs, psql = await paired_scenarios(stack, opts, "keep", f"TRUNCATE {b.MODULE}")
    return {"runs": runs, "psql": psql}


def render(f: Any) -> list[str]:
    d = getattr(f, "keep", None)
    if not d:
        return []
    out = [
        f"### The daily re-import of a module that keeps missing rows: {f.rows:,} rows of `transactions`",
        "",
        "`transactions` as shipped (`missing_rows: keep`): COPY into staging, then the write of what changed",
        "(services/importer/merge.py). Each row is paired with psql \\copy of the same CSV into an empty table with",
        f"the primary key, in the same run, order alternating; medians of {len(d['psql']['first'])}, stages too.",
        "`prepare` includes the wait for the tenant's merge lock (per tenant and table: another import of the",
        "same tenant and module in this schema queues there).",
        "",
        "| scenario | Conduit s | psql s | against psql | prepare | copy | merge | changed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        runs, psql = d["runs"][scenario], d["psql"][scenario]
        total, copy = statistics.median(r["total"] for r in runs), statistics.median(psql)
        stage = {s: statistics.median(r["stages"].get(s, 0.0) for r in runs) for s in ("prepare", "copy", "merge")}
        out.append(
            f"| {_NAMES[scenario]} | {total:.2f} | {copy:.2f} | **{copy / total:.2f}** | {stage['prepare']:.2f} | "
            f"{stage['copy']:.2f} | "
            f"{stage['merge']:.2f} | {runs[-1]['changed']:,} |"
        )
    return out + [""]
