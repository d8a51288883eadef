"""Importer: rows/s of the whole pipeline against psql \\copy and pgloader, worker memory, chunk sizes, a daily cycle.

Everything runs as in production: the demo third party, the auth proxy and
`conduit importer` processes, PostgreSQL and Redis (the configured ones, else
throwaway servers, as `make run` does), in a schema and Redis database of the
bench's own. The throughput runs are paired (Conduit and psql back to back,
order alternating, a CHECKPOINT before each) and the medians reported, so drift
on a shared machine hits both sides alike. Exports are built once into
``.run/bench-importer/exports`` and reused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench._importer_report import render
from bench._procs import BenchError, Service, free_port, wait_http
from bench._report import DOC, write_section
from devtools.redis_lease import Leased, lease

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".run" / "bench-importer"
RESULTS = Path(__file__).resolve().parent / "results"
CONDUIT = str(Path(sys.executable).with_name("conduit"))
# Overridable, so that two checkouts can bench at once without dropping each other's schema and jobs.
SCHEMA = os.environ.get("BENCH_IMPORTER_SCHEMA", "bench_importer")
REDIS_DB = os.environ.get("BENCH_IMPORTER_REDIS_DB", "12")
MODULE = "transactions"
DAY = "2024-05-01"
# Valid but unusual files (issue 15): the clean export changed as real ones are, each served as a day of its own.
UNUSUAL = {"inch marks": "2024-08-01", "a \\. line": "2024-08-02", "CR-only": "2024-08-03"}
# Each bench file is served as a day of its own: the demo third party finds an export by its day, so two
# files on one day overwrite each other (the daily section's 1%-changed file is 2024-05-03).
REJECTS_DAY = "2024-09-01"


@dataclass
class Figures:
    rows: int = 0
    conduit: list[dict[str, Any]] = field(default_factory=list)
    psql: list[float] = field(default_factory=list)
    pgloader: float | None = None
    unchanged: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, Any] = field(default_factory=dict)
    careful: dict[str, Any] = field(default_factory=dict)
    # The export with 0.5% bad rows (careful path) against psql \\copy of it without them, paired.
    rejects: dict[str, Any] = field(default_factory=dict)
    unusual: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    cycle: dict[str, Any] = field(default_factory=dict)
    daily: dict[str, Any] = field(default_factory=dict)
    keep: dict[str, Any] = field(default_factory=dict)
    machine: str = ""


def main(argv: list[str]) -> int:
    global SCHEMA, REDIS_DB
    opts = _options(argv)
    SCHEMA, REDIS_DB = opts.schema, opts.redis_db
    try:
        figures = asyncio.run(_bench(opts))
    except BenchError as exc:
        print(f"bench importer: {exc}", file=sys.stderr)
        return 1
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "importer.json").write_text(json.dumps(asdict(figures), indent=2, default=str))
    body = render(figures, opts)
    print(body)
    if not opts.no_write:
        write_section(DOC, "importer", body)
    return 0


def _options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench importer", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the throughput runs")
    parser.add_argument("--big-rows", type=int, default=5_000_000, help="rows of the second memory run (0: skip)")
    parser.add_argument("--repeat", type=int, default=3, help="paired throughput runs")
    parser.add_argument("--chunks", default="1000,5000,20000,50000", help="careful-path chunk sizes to sweep")
    parser.add_argument("--chunk-rows", type=int, default=200_000, help="rows of each chunk-size run")
    parser.add_argument("--cycle", default="10x50x10000", help="tenants x modules x rows of the daily cycle")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the daily cycle")
    parser.add_argument(
        "--daily-big-rows", type=int, default=3_000_000, help="rows of the daily swap's second memory run (0: skip)"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma list of: throughput,pgloader,big,chunks,cycle,careful,rejects,unusual,again,keep,daily",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/benchmarks.md")
    parser.add_argument(
        "--schema", default=SCHEMA, help="PostgreSQL schema of the bench's own (dropped first): two runs need two"
    )
    parser.add_argument(
        "--redis-db", default=REDIS_DB, help="Redis database of the bench's own (leased for the run, flushed first)"
    )
    opts = parser.parse_args(argv)
    opts.skip = set(filter(None, opts.skip.split(",")))
    return opts


async def _bench(opts: argparse.Namespace) -> Figures:
    from devtools.servers import ensure_servers

    WORK.mkdir(parents=True, exist_ok=True)
    urls = ensure_servers(ROOT / ".run" / "servers")
    try:
        with lease(urls["CONDUIT_REDIS_URL"], int(REDIS_DB)):
            return await _bench_on(urls, opts)
    except Leased as exc:
        raise BenchError(f"{exc}: pick another with --redis-db") from None


async def _bench_on(urls: dict[str, str], opts: argparse.Namespace) -> Figures:
    """The sections asked for, on a leased Redis database (flushed first) and a schema of the bench's own."""
    env = await _prepare(urls, opts)
    figures = Figures(rows=opts.rows, machine=_machine())
    with _Stack(env) as stack:
        if "throughput" not in opts.skip:
            await _throughput(stack, opts, figures)
        if "rejects" not in opts.skip:
            figures.rejects = await _rejects(stack, opts)
        if "unusual" not in opts.skip:
            figures.unusual = await _unusual(stack, opts)
        if "careful" not in opts.skip:
            figures.careful = await _careful(stack, opts)
        if opts.big_rows and "big" not in opts.skip:
            figures.memory[f"{opts.big_rows}"] = await _big(stack, opts)
        if "chunks" not in opts.skip:
            figures.chunks = await _chunk_curve(stack, opts)
        if "cycle" not in opts.skip:
            figures.cycle = await _daily_cycle(stack, opts)
        if "keep" not in opts.skip:  # before daily, which makes `transactions` a snapshot module
            from bench._importer_keep import keep

            figures.keep = await keep(stack, opts)
        if "daily" not in opts.skip:  # last: it makes `transactions` a partitioned snapshot module
            from bench._importer_daily import daily

            figures.daily = await daily(stack, opts)
    return figures


# --- environment ------------------------------------------------------------------------------------------


async def _prepare(urls: dict[str, str], opts: argparse.Namespace) -> dict[str, str]:
    """A fresh schema (migrated), a flushed Redis database, a tenants file and the environment for processes."""
    import asyncpg
    from cryptography.fernet import Fernet
    from redis.asyncio import Redis

    from conduit.db_cli import migrate

    base = urls["CONDUIT_DATABASE_URL"]
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
    finally:
        await conn.close()
    dsn = f"{base}{'&' if '?' in base else '?'}search_path={SCHEMA}"
    await migrate(dsn, ROOT / "migrations")
    redis_url = urls["CONDUIT_REDIS_URL"].rsplit("/", 1)[0] + "/" + REDIS_DB
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    tenants, clients = _tenants(opts)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env |= {
        "CONDUIT_DATABASE_URL": dsn,
        "CONDUIT_DATABASE_BASE_URL": base,
        "CONDUIT_REDIS_URL": redis_url,
        "CONDUIT_TENANTS_FILE": str(tenants),
        "CONDUIT_TOKEN_KEY": Fernet.generate_key().decode(),
        "CONDUIT_DEMO_CLIENTS": clients,
        "CONDUIT_DEMO_EXPORT_CACHE_DIR": str(WORK / "exports"),
        "CONDUIT_LOG_LEVEL": "WARNING",
        "CONDUIT_PROXY_ACCESS_LOG": "false",
        "CONDUIT_IMPORTER_HTTP_PORT": "0",
        # The provider limit is proven by the tests; here it would only measure itself.
        "CONDUIT_IMPORTER_PROVIDER_RATES": json.dumps({"demo": 1000}),
        "CONDUIT_IMPORTER_PROVIDER_BURST": "50",
    }
    return env


def _cycle_shape(opts: argparse.Namespace) -> tuple[int, int, int]:
    tenants, modules, rows = (int(x) for x in opts.cycle.split("x"))
    return tenants, modules, rows


def _tenants(opts: argparse.Namespace) -> tuple[Path, str]:
    import yaml

    count = _cycle_shape(opts)[0]
    names = ["acme", *(f"t{i:02d}" for i in range(1, count + 1))]
    secrets_dir = WORK / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    tenants = {}
    for name in names:
        secret = secrets_dir / name
        secret.write_text(f"{name}-bench-secret")
        tenants[name] = {"providers": {"demo": {"client_id": f"{name}-demo", "client_secret": {"file": str(secret)}}}}
    path = WORK / "tenants.yaml"
    provider = {"token_url": "http://127.0.0.1:{demo}/oauth/token", "api_base_url": "http://127.0.0.1:{demo}/api/"}
    path.write_text(yaml.safe_dump({"providers": {"demo": provider}, "tenants": tenants}))
    return path, ";".join(f"{n}-demo={n}-bench-secret" for n in names)


class _Stack:
    """The demo third party and the proxy (restarted with other export sizes), and worker processes on demand."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.demo: Service | None = None
        self.proxy: Service | None = None
        self.demo_port = free_port()
        self.proxy_port = free_port()
        path = Path(env["CONDUIT_TENANTS_FILE"])
        path.write_text(path.read_text().replace("{demo}", str(self.demo_port)))
        self.env["CONDUIT_PROXY_URL"] = f"http://127.0.0.1:{self.proxy_port}"

    def __enter__(self) -> _Stack:
        self.proxy = Service(
            "proxy", [CONDUIT, "proxy"], WORK / "proxy.log", {**self.env, "CONDUIT_PROXY_PORT": str(self.proxy_port)}
        )
        wait_http(self.proxy, f"http://127.0.0.1:{self.proxy_port}/health_check")
        return self

    def __exit__(self, *_: object) -> None:
        for service in (self.demo, self.proxy):
            if service is not None:
                service.stop()

    def serve_exports(self, rows: int, per_module: dict[str, int] | None = None) -> None:
        if self.demo is not None:
            self.demo.stop()
        env = {
            **self.env,
            "CONDUIT_DEMO_PORT": str(self.demo_port),
            "CONDUIT_DEMO_EXPORT_ROWS": str(rows),
            "CONDUIT_DEMO_EXPORT_ROWS_PER_MODULE": json.dumps(per_module or {}),
        }
        self.demo = Service("demo-api", [CONDUIT, "demo-api"], WORK / "demo.log", env)
        wait_http(self.demo, f"http://127.0.0.1:{self.demo_port}/health_check")

    def worker(self, name: str, **settings: str) -> Service:
        env = {**self.env, **{f"CONDUIT_{k.upper()}": v for k, v in settings.items()}}
        return Service(name, [CONDUIT, "importer"], WORK / f"{name}.log", env)


# --- throughput ---------------------------------------------------------------------------------------------


async def _throughput(stack: _Stack, opts: argparse.Namespace, f: Figures) -> None:
    zipped = _build(MODULE, "acme-demo", DAY, opts.rows)
    csv_path = _extract(zipped)
    stack.serve_exports(0, {MODULE: opts.rows})
    await _sql(stack, _comparison_tables())
    for i in range(opts.repeat):
        sides = ["conduit", "psql"] if i % 2 == 0 else ["psql", "conduit"]
        for side in sides:
            if side == "psql":
                f.psql.append(await _psql(stack, csv_path))
            else:
                f.conduit.append(await _conduit_fresh(stack, f"bench-{i}"))
            print(f"  {side}: {f.psql[-1] if side == 'psql' else f.conduit[-1]['total']:.2f} s", flush=True)
    if "pgloader" not in opts.skip:
        f.pgloader = await _pgloader(stack, csv_path)
        print(f"  pgloader: {f.pgloader}", flush=True)
    f.memory[f"{opts.rows}"] = max(r["peak_mb"] for r in f.conduit)
    if "again" in opts.skip:
        return
    # The same export again (every row unchanged), then the next day's (every row changed).
    f.unchanged = await _conduit(stack, "bench-unchanged", DAY)
    _build(MODULE, "acme-demo", "2024-05-02", opts.rows)
    f.changed = await _conduit(stack, "bench-changed", "2024-05-02")


def _comparison_tables() -> str:
    return f"""
        DROP TABLE IF EXISTS bench_psql, bench_pgloader;
        CREATE TABLE bench_psql (LIKE {MODULE} INCLUDING ALL);
        ALTER TABLE bench_psql ALTER COLUMN tenant_id SET DEFAULT 'acme';
        CREATE TABLE bench_pgloader (LIKE {MODULE} INCLUDING ALL);
        ALTER TABLE bench_pgloader ALTER COLUMN tenant_id SET DEFAULT 'acme';
    """


async def _conduit_fresh(stack: _Stack, job: str, day: str = DAY) -> dict[str, Any]:
    await _sql(stack, f"TRUNCATE {MODULE}")
    return await _conduit(stack, job, day)


async def _unusual(stack: _Stack, opts: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each unusual file as a first load, paired with `psql \\copy` of the clean file in the same run."""
    clean = _extract(_build(MODULE, "acme-demo", DAY, opts.rows))
    figures = {}
    for kind, day in UNUSUAL.items():
        _unusual_zip(clean, kind, day, opts.rows)
        runs: dict[str, Any] = {"conduit": [], "psql": []}
        for i in range(opts.repeat):
            for side in ["conduit", "psql"] if i % 2 == 0 else ["psql", "conduit"]:
                if side == "psql":
                    runs["psql"].append(await _psql(stack, clean))
                else:
                    runs["conduit"].append(await _conduit_fresh(stack, f"bench-{day}-{i}", day))
                last = runs["psql"][-1] if side == "psql" else runs["conduit"][-1]["total"]
                print(f"  {kind}, {side}: {last:.2f} s", flush=True)
        figures[kind] = runs
    return figures


def _unusual_zip(clean: Path, kind: str, day: str, rows: int) -> Path:
    """The clean export's CSV changed as ``kind`` says, zipped where the demo third party serves ``day`` from."""
    target = clean.with_name(clean.name.replace(DAY, day)).with_suffix(".zip")
    if target.exists():
        return target
    data = clean.read_bytes()
    if kind == "CR-only":
        data = data.replace(b"\r\n", b"\r")
    else:
        data = _rewritten(data, kind)
    part = target.with_suffix(".part")
    with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        archive.writestr(f"{MODULE}.csv", data)
    part.replace(target)
    return target


def _rewritten(data: bytes, kind: str) -> bytes:
    """1% of records with an inch mark in a bare description (an even number: the file stays well-formed),
    or the middle record's memo holding a line of only ``\\.`` (inside its quoted field, as a note would)."""
    import csv
    import io

    records = list(csv.reader(io.StringIO(data.decode(), newline="")))
    description, memo = records[0].index("description"), records[0].index("memo")
    lines = []
    for i, fields in enumerate(records):
        written = [_csv_field(v) for v in fields]
        if kind == "inch marks" and i % 100 == 50:
            written[description] = '5" screen'
        elif kind != "inch marks" and i == len(records) // 2:
            written[memo] = '"see below\r\n\\.\r\nend of note"'
        lines.append(",".join(written))
    return ("\r\n".join(lines) + "\r\n").encode()


def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\r\n') else value


async def _conduit(stack: _Stack, job: str, day: str, expect: str = "succeeded", **settings: str) -> dict[str, Any]:
    """One import by a fresh worker process: the ledger's figures, the job's wall time and the worker's peak RSS."""
    await _sql(stack, "CHECKPOINT")
    worker = stack.worker(f"worker-{job}", **settings)
    try:
        wall = await _enqueue_and_wait(stack, [("acme", MODULE, day, job)])
        peak = _peak_mb(worker.pid)
    finally:
        worker.stop()
    run = (await _fetch(stack, "SELECT * FROM import_runs WHERE job_id = $1 ORDER BY id DESC LIMIT 1", job))[0]
    if run["status"] != expect:
        raise BenchError(f"import {job} ended {run['status']}: {run['error_message']}")
    seconds = json.loads(run["stage_seconds"]) if isinstance(run["stage_seconds"], str) else run["stage_seconds"]
    return {"total": seconds["total"], "wall": wall, "stages": seconds, "path": run["parse_path"],
            "rows": run["rows_imported"], "changed": run["rows_changed"], "peak_mb": peak,
            "rejected": run["rows_rejected"]}  # fmt: skip


async def _psql(stack: _Stack, csv_path: Path) -> float:
    await _sql(stack, "TRUNCATE bench_psql; CHECKPOINT")
    cols = await _columns(stack)
    copy = f"\\copy {SCHEMA}.bench_psql({cols}) FROM '{csv_path}' WITH (FORMAT csv, HEADER true)"
    started = time.perf_counter()
    done = subprocess.run(["psql", "-X", "-q", stack.env["CONDUIT_DATABASE_BASE_URL"], "-c", copy], capture_output=True)
    if done.returncode != 0:
        raise BenchError(f"psql failed: {done.stderr.decode()[-500:]}")
    return time.perf_counter() - started


async def _pgloader(stack: _Stack, csv_path: Path) -> float | None:
    if shutil.which("pgloader") is None:
        print("  pgloader not installed (apt-get install pgloader): skipped", file=sys.stderr)
        return None
    await _sql(stack, "TRUNCATE bench_pgloader; CHECKPOINT")
    cols = await _columns(stack)
    command = WORK / "load.pgl"
    command.write_text(
        f"LOAD CSV FROM '{csv_path}' ({cols})\n"
        f"  INTO {stack.env['CONDUIT_DATABASE_BASE_URL']} TARGET TABLE {SCHEMA}.bench_pgloader ({cols})\n"
        "  WITH skip header = 1, fields optionally enclosed by '\"', fields escaped by double-quote,\n"
        "       fields terminated by ','\n"
        "  SET client_encoding to 'utf8';\n"
    )
    started = time.perf_counter()
    done = subprocess.run(["pgloader", str(command)], capture_output=True, cwd=WORK)
    elapsed = time.perf_counter() - started
    loaded = (await _fetch(stack, "SELECT count(*) AS n FROM bench_pgloader"))[0]["n"]
    if done.returncode != 0 or not loaded:
        raise BenchError(f"pgloader failed ({loaded} rows): {done.stdout.decode()[-800:]}")
    return elapsed


async def _careful(stack: _Stack, opts: argparse.Namespace) -> dict[str, Any]:
    """The same million rows down the careful path (aiocsv in the worker): where Python's time would go."""
    await _sql(stack, f"TRUNCATE {MODULE}")
    return await _conduit(stack, "bench-careful", DAY, importer_fast_path="false")


async def _rejects(stack: _Stack, opts: argparse.Namespace) -> dict[str, Any]:
    """1M rows with 0.5% bad ones (careful path, first load) against psql \\copy of the file without them, paired."""
    from bench import _rejects_export
    from demo.exports import cache_path
    from shared.modules import catalogue

    day = REJECTS_DAY
    clean = _extract(_build(MODULE, "acme-demo", DAY, opts.rows))
    zipped = cache_path(catalogue().get(MODULE), "acme-demo", day, opts.rows, WORK / "exports")
    kept = WORK / "exports" / f"{zipped.stem}-kept.csv"
    bad = _rejects_export.build(clean, zipped, kept, f"{MODULE}.csv")
    stack.serve_exports(0, {MODULE: opts.rows})
    await _sql(stack, _comparison_tables())
    conduit: list[dict[str, Any]] = []
    psql: list[float] = []
    for i in range(opts.repeat):
        for side in ["conduit", "psql"] if i % 2 == 0 else ["psql", "conduit"]:
            if side == "psql":
                psql.append(await _psql(stack, kept))
            else:
                await _sql(stack, f"TRUNCATE {MODULE}")
                conduit.append(await _conduit(stack, f"bench-rejects-{i}", day, expect="partially_rejected"))
            done = psql[-1] if side == "psql" else conduit[-1]["total"]
            print(f"  rejects, {side}: {done:.2f} s", flush=True)
    return {"bad_rows": bad, "conduit": conduit, "psql": psql}


async def _big(stack: _Stack, opts: argparse.Namespace) -> float:
    _build(MODULE, "acme-demo", "2024-06-01", opts.big_rows)
    stack.serve_exports(0, {MODULE: opts.big_rows})
    await _sql(stack, f"TRUNCATE {MODULE}")
    run = await _conduit(stack, "bench-big", "2024-06-01")
    print(f"  {opts.big_rows} rows: {run['total']:.1f} s, peak {run['peak_mb']:.0f} MB", flush=True)
    return float(run["peak_mb"])


async def _chunk_curve(stack: _Stack, opts: argparse.Namespace) -> list[dict[str, Any]]:
    _build(MODULE, "acme-demo", "2024-07-01", opts.chunk_rows)
    stack.serve_exports(0, {MODULE: opts.chunk_rows})
    curve = []
    for chunk in (int(c) for c in opts.chunks.split(",")):
        await _sql(stack, f"TRUNCATE {MODULE}")
        run = await _conduit(
            stack, f"bench-chunk-{chunk}", "2024-07-01", importer_fast_path="false", importer_copy_chunk_rows=str(chunk)
        )
        curve.append({"chunk": chunk, **run})
        print(f"  chunk {chunk}: {run['total']:.2f} s, peak {run['peak_mb']:.0f} MB", flush=True)
    return curve


# --- the daily cycle ----------------------------------------------------------------------------------------


async def _daily_cycle(stack: _Stack, opts: argparse.Namespace) -> dict[str, Any]:
    from shared.modules import catalogue

    tenants, module_count, rows = _cycle_shape(opts)
    names = [f"t{i:02d}" for i in range(1, tenants + 1)]
    modules = catalogue().names()[:module_count]
    started = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_build_star, [(m, f"{t}-demo", DAY, rows) for t in names for m in modules]))
    print(f"  exports ready in {time.perf_counter() - started:.0f} s", flush=True)
    stack.serve_exports(rows)
    await _sql(stack, "CHECKPOINT")
    ports = [free_port() for _ in range(opts.workers)]
    workers = [stack.worker(f"worker-cycle-{i}", importer_http_port=str(p)) for i, p in enumerate(ports)]
    try:
        for worker, port in zip(workers, ports, strict=True):
            wait_http(worker, f"http://127.0.0.1:{port}/ready")  # started, schema checked: the clock starts now
        jobs = [(t, m, DAY, f"cycle:{t}:{m}") for t in names for m in modules]
        wall = await _enqueue_and_wait(stack, jobs, timeout=3600)
        peaks = [_peak_mb(w.pid) for w in workers]
    finally:
        for worker in workers:
            worker.stop()
    counts = await _fetch(
        stack,
        "SELECT status, count(*) AS n, sum(rows_imported) AS rows FROM import_runs WHERE job_id LIKE 'cycle:%' "
        "GROUP BY status",
    )
    imported = sum(int(r["rows"] or 0) for r in counts if r["status"] in ("succeeded", "partially_rejected"))
    return {"tenants": tenants, "modules": module_count, "rows": rows, "workers": opts.workers, "wall": wall,
            "imported": imported, "statuses": {r["status"]: r["n"] for r in counts}, "peaks_mb": peaks}  # fmt: skip


# --- helpers ------------------------------------------------------------------------------------------------


def _build(module: str, client: str, day: str, rows: int) -> Path:
    from demo.exports import build_zip
    from shared.modules import catalogue

    started = time.perf_counter()
    path = build_zip(catalogue().get(module), client, day, rows, WORK / "exports")
    if time.perf_counter() - started > 1:
        print(f"  built {path.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def _build_star(args: tuple[str, str, str, int]) -> Path:
    return _build(*args)


def _extract(zipped: Path) -> Path:
    target = zipped.with_suffix(".csv")
    if not target.exists():
        with zipfile.ZipFile(zipped) as archive:
            member = archive.infolist()[0]
            with archive.open(member) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    return target


async def _enqueue_and_wait(stack: _Stack, jobs: list[tuple[str, str, str, str]], timeout: float = 1800) -> float:
    """Enqueue the jobs and wait until the ledger has a final attempt for each; returns the wall time."""
    from arq.connections import RedisSettings

    from shared.job_json import create_pool
    from shared.jobs import IMPORT_EXPORT

    arq = await create_pool(RedisSettings.from_dsn(stack.env["CONDUIT_REDIS_URL"]))
    started = time.perf_counter()
    try:
        for tenant, module, day, job_id in jobs:
            if await arq.enqueue_job(IMPORT_EXPORT, tenant, module, day, _job_id=job_id) is None:
                raise BenchError(f"job {job_id} already exists (flush Redis database {REDIS_DB})")
        ids = [j[3] for j in jobs]
        query = (
            "SELECT count(DISTINCT job_id) AS n FROM import_runs WHERE job_id = ANY($1::text[]) "
            "AND status IN ('succeeded', 'partially_rejected', 'failed') AND NOT will_retry"
        )
        while (await _fetch(stack, query, ids))[0]["n"] < len(ids):
            if time.perf_counter() - started > timeout:
                raise BenchError(f"imports not finished after {timeout:.0f} s")
            await asyncio.sleep(0.1)  # polling the ledger another process writes
        return time.perf_counter() - started
    finally:
        await arq.aclose()


async def _sql(stack: _Stack, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(stack.env["CONDUIT_DATABASE_URL"])
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _fetch(stack: _Stack, sql: str, *args: Any) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(stack.env["CONDUIT_DATABASE_URL"])
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def _columns(stack: _Stack) -> str:
    from shared.modules import catalogue

    return ", ".join(c.name for c in catalogue().get(MODULE).columns)


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM for pid {pid}")


def _machine() -> str:
    cpus = os.cpu_count()
    load = os.getloadavg()[0]
    return f"{platform.machine()}, {cpus} cores, Python {platform.python_version()}, load average {load:.1f} at start"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
