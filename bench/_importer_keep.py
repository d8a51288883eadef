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
from bench._importer_daily import DAYS, SCENARIOS, disk, disk_line, paired_scenarios

_NAMES = {"first": "first load", "again": "same export again", "all_changed": "next day, all changed",
          "one_percent": "next day, 1% changed"}  # fmt: skip


async def keep(stack: b._Stack, opts: argparse.Namespace) -> dict[str, Any]:
    """Each scenario ``opts.repeat`` times, paired with psql."""
    stack.serve_exports(0, {b.MODULE: opts.rows})
    await b._sql(stack, b._comparison_tables())
    runs, psql = await paired_scenarios(stack, opts, "keep", f'DROP TABLE IF EXISTS "{b.MODULE}$acme"')
    # Every day's file 1% changed against the day before's: the rows written are the fewest a day can change.
    on_disk = await disk(stack, opts, (DAYS["all_changed"], DAYS["one_percent"]), "keep")
    return {"runs": runs, "psql": psql, "disk": on_disk}


def render(f: Any) -> list[str]:
    d = getattr(f, "keep", None)
    if not d:
        return []
    out = [
        f"### The daily re-import of a module that keeps missing rows: {f.rows:,} rows of `transactions`",
        "",
        "`transactions` as shipped (`missing_rows: keep`): COPY into a new table, keyed, one join against the",
        "tenant's partition (PostgreSQL's parallel workers) for the changed rows; a file holding every row of the",
        "partition is then swapped in, nothing written where nothing changed; a file lacking some has its few changed",
        "rows written in place, or (more than a tenth changed) is swapped in with the rows it lacks carried over",
        "(services/importer/swap.py). Each row is paired",
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
    if d.get("disk"):
        out += ["", disk_line(d["disk"], "alternating day 2 and day 2 with 1% of day 1: 1% changed each day")]
    return out + [""]
