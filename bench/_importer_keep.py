"""The daily re-import of a module that keeps missing rows (issue 12): the fast path's write against psql \\copy.

`transactions` as shipped (``missing_rows: keep``, partitioned by tenant): day 1 into an empty table, day 1 again,
day 2 (every row changed), then day 2 with 1% of day 1's rows (1% changed). Every import is paired with psql
\\copy of the same CSV into an empty table, order alternating; the tenant's partition is dropped before each
repetition.
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
    runs, psql = await paired_scenarios(stack, opts, "keep", f'DROP TABLE IF EXISTS "{b.MODULE}$acme"')
    return {"runs": runs, "psql": psql}


def render(f: Any) -> list[str]:
    d = getattr(f, "keep", None)
    if not d:
        return []
    out = [
        f"### The daily re-import of a module that keeps missing rows: {f.rows:,} rows of `transactions`",
        "",
        "`transactions` as shipped (`missing_rows: keep`): COPY into a new table, keyed, one join against the",
        "tenant's partition, then only the changed rows written in place, or (more than a tenth changed) the new",
        "table swapped in with the rows the file lacks carried over (services/importer/swap.py). Each row is paired",
        "with psql \\copy of the same CSV into an empty table with the primary key, in the same run, order",
        f"alternating; medians of {len(d['psql']['first'])}, stages too. `prepare` includes the wait for the",
        "tenant's merge lock.",
        "",
        "| scenario | Conduit s | psql s | against psql | path | copy | index | count | write | swap | changed |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        runs, psql = d["runs"][scenario], d["psql"][scenario]
        total, copy = statistics.median(r["total"] for r in runs), statistics.median(psql)
        names = ("copy", "index", "count", "write", "swap")
        stage = {s: statistics.median(r["stages"].get(s, 0.0) for r in runs) for s in names}
        out.append(
            f"| {_NAMES[scenario]} | {total:.2f} | {copy:.2f} | **{copy / total:.2f}** | {runs[-1]['path']} | "
            + " | ".join(f"{stage[s]:.2f}" for s in names)
            + f" | {runs[-1]['changed']:,} |"
        )
    return out + [""]
