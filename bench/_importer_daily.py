"""The daily re-import of a full snapshot (issue 12): the swap path against psql \\copy, its memory and its disk.

`transactions` is made a snapshot module for these runs: a copy of the module definitions with
``missing_rows: delete`` (``CONDUIT_MODULES_DIR`` of the workers and the demo), and its table in the
bench's schema partitioned by tenant as migrations/0006 does for the shipped snapshot modules. Every
import is paired with psql \\copy of the same CSV into an empty table, order alternating.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import statistics
import zipfile
from pathlib import Path
from typing import Any

from bench import importer as b

DAYS = {"first": "2024-05-01", "again": "2024-05-01", "all_changed": "2024-05-02", "one_percent": "2024-05-03"}
# In this order each one's table is the one before's: day 1, day 1 again, day 2, day 2 with 1% of day 1.
SCENARIOS = ("first", "again", "all_changed", "one_percent")


def snapshot_modules() -> Path:
    """The shipped definitions, with `transactions` a full snapshot."""
    from shared.modules import PACKAGED

    target = b.WORK / "modules-snapshot"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PACKAGED, target)
    path = target / "transactions.yaml"
    path.write_text(path.read_text().replace("\nkey:", "\nmissing_rows: delete\nkey:", 1))
    return target


def one_percent_changed(rows: int) -> Path:
    """Day 2's export with every hundredth row taken from day 1's (same keys): against day 2, 1% changed."""
    from demo.exports import _VERSION

    day1 = b._extract(b._build(b.MODULE, "acme-demo", DAYS["first"], rows))
    day2 = b._extract(b._build(b.MODULE, "acme-demo", DAYS["all_changed"], rows))
    # The name the demo gives that date's export: it serves the cached file as it is.
    path = b.WORK / "exports" / f"v{_VERSION}-acme-demo-{b.MODULE}-{DAYS['one_percent']}-{rows}.zip"
    if path.exists():
        return path
    out = io.BytesIO()
    # Records may hold line breaks: read both files as CSV and pair records, not lines.
    with day1.open(newline="", encoding="utf-8") as one, day2.open(newline="", encoding="utf-8") as two:
        text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        writer = csv.writer(text)
        for i, (a, c) in enumerate(zip(csv.reader(one), csv.reader(two), strict=True)):
            writer.writerow(a if i > 0 and i % 100 == 0 else c)
        text.flush()
        text.detach()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{b.MODULE}.csv", out.getvalue())
    return path


async def daily(stack: b._Stack, opts: argparse.Namespace) -> dict[str, Any]:
    """Each scenario ``opts.repeat`` times, paired with psql; then RSS at 1M and 3M rows, then disk after 7 days."""
    modules = str(snapshot_modules())
    stack.env["CONDUIT_MODULES_DIR"] = modules
    stack.serve_exports(0, {b.MODULE: opts.rows})
    await b._sql(stack, b._comparison_tables())
    await b._sql(stack, f"TRUNCATE {b.MODULE}")
    runs, psql = await paired_scenarios(stack, opts, "daily", f'DROP TABLE IF EXISTS "{b.MODULE}$acme"')
    memory = await _memory(stack, opts)
    on_disk = await disk(stack, opts, (DAYS["first"], DAYS["all_changed"]), "daily")
    return {"runs": runs, "psql": psql, "memory": memory, "disk": on_disk}


async def paired_scenarios(
    stack: b._Stack, opts: argparse.Namespace, tag: str, reset: str
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[float]]]:
    """Every scenario ``opts.repeat`` times, each import paired with psql \\copy of its CSV, order alternating;
    ``reset`` (SQL) empties the tenant's rows before each repetition. Returns Conduit's runs and psql's seconds."""
    files = {s: b._extract(b._build(b.MODULE, "acme-demo", DAYS[s], opts.rows)) for s in ("first", "all_changed")}
    files["again"] = files["first"]
    files["one_percent"] = b._extract(one_percent_changed(opts.rows))
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SCENARIOS}
    psql: dict[str, list[float]] = {s: [] for s in SCENARIOS}
    for i in range(opts.repeat):
        await b._sql(stack, reset)
        for scenario in SCENARIOS:
            for side in ["conduit", "psql"] if i % 2 == 0 else ["psql", "conduit"]:
                if side == "psql":
                    psql[scenario].append(await b._psql(stack, files[scenario]))
                else:
                    runs[scenario].append(await b._conduit(stack, f"{tag}-{i}-{scenario}", DAYS[scenario]))
            run = runs[scenario][-1]
            print(f"  {tag} {scenario}: conduit {run['total']:.2f} s ({run['path']}, {run['changed']} changed, "
                  f"merge {run['stages'].get('merge', 0):.2f} s), psql {psql[scenario][-1]:.2f} s, "
                  f"ratio {psql[scenario][-1] / run['total']:.2f}", flush=True)  # fmt: skip
    return runs, psql


async def _memory(stack: b._Stack, opts: argparse.Namespace) -> dict[str, float]:
    """Worker peak RSS of a swap (the day-2 file over day 1) at ``opts.rows`` and ``opts.daily_big_rows`` rows."""
    out = {}
    for rows in (opts.rows, opts.daily_big_rows):
        if not rows:
            continue
        b._build(b.MODULE, "acme-demo", DAYS["first"], rows)
        b._build(b.MODULE, "acme-demo", DAYS["all_changed"], rows)
        stack.serve_exports(0, {b.MODULE: rows})
        await b._sql(stack, f'DROP TABLE IF EXISTS "{b.MODULE}$acme"')
        await b._conduit(stack, f"daily-mem-{rows}-1", DAYS["first"])
        run = await b._conduit(stack, f"daily-mem-{rows}-2", DAYS["all_changed"])
        out[str(rows)] = run["peak_mb"]
        print(f"  daily swap of {rows} rows: {run['total']:.1f} s, peak {run['peak_mb']:.0f} MB", flush=True)
    stack.serve_exports(0, {b.MODULE: opts.rows})
    return out


async def disk(stack: b._Stack, opts: argparse.Namespace, days: tuple[str, str], tag: str) -> dict[str, Any]:
    """The tenant's rows on disk after 7 daily imports (alternating the two ``days``), against one day's table."""
    await b._sql(stack, f'DROP TABLE IF EXISTS "{b.MODULE}$acme"')
    for day in range(7):
        await b._conduit(stack, f"{tag}-disk-{day}", days[day % 2])
    await b._psql(stack, b._extract(b._build(b.MODULE, "acme-demo", DAYS["first"], opts.rows)))
    sizes = await b._fetch(
        stack,
        f"SELECT (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('{b.MODULE}')) AS after_7, "
        "pg_total_relation_size('bench_psql') AS one_day, "
        "(SELECT count(*) FROM pg_class WHERE relname LIKE 'conduit\\_load\\_%' "
        f"AND relnamespace = '{b.SCHEMA}'::regnamespace) AS leftover",
    )
    row = sizes[0]
    return {"after_7": int(row["after_7"]), "one_day": int(row["one_day"]), "leftover": int(row["leftover"])}


def render(f: Any) -> list[str]:
    d = f.daily
    if not d:
        return []
    out = [
        f"### The daily re-import of a full snapshot: {f.rows:,} rows of `transactions`, swap path",
        "",
        "`transactions` made a `missing_rows: delete` module and partitioned by tenant (migrations/0006): each",
        "import COPYs into a new table and swaps it in for the tenant's partition (services/importer/swap.py).",
        "Each row is paired with psql \\copy of the same CSV into an empty table with the primary key, in the",
        f"same run, order alternating; medians of {len(d['psql']['first'])}. Stage seconds are medians too.",
        "",
        "| scenario | Conduit s | psql s | against psql | copy | index | count | swap | changed, deleted |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"first": "first load", "again": "same export again", "one_percent": "next day, 1% changed",
             "all_changed": "next day, all changed"}  # fmt: skip
    for scenario in SCENARIOS:
        runs, psql = d["runs"][scenario], d["psql"][scenario]
        total, copy = statistics.median(r["total"] for r in runs), statistics.median(psql)
        stage = {
            s: statistics.median(r["stages"].get(s, 0.0) for r in runs) for s in ("copy", "index", "count", "swap")
        }
        out.append(
            f"| {names[scenario]} | {total:.2f} | {copy:.2f} | **{copy / total:.2f}** | {stage['copy']:.2f} | "
            f"{stage['index']:.2f} | {stage['count']:.2f} | {stage['swap']:.2f} | {runs[-1]['changed']:,} |"
        )
    if d["memory"]:
        sizes = ", ".join(f"{int(k):,} rows {v:.0f} MB" for k, v in d["memory"].items())
        out += ["", f"Worker peak RSS of a swap: {sizes}."]
    if d["disk"]:
        out += ["", disk_line(d["disk"], "alternating two different days")]
    return out + [""]


def disk_line(sizes: dict[str, Any], days: str) -> str:
    """What :func:`disk` measured, as a sentence of the report."""
    return (
        f"Disk after 7 daily imports ({days}): {sizes['after_7'] / 2**20:.1f} MiB for the module's partitions "
        f"against {sizes['one_day'] / 2**20:.1f} MiB for one day's table loaded by psql (`pg_total_relation_size`): "
        f"**{sizes['after_7'] / sizes['one_day']:.2f} ×**; {sizes['leftover']} load tables left behind."
    )
