"""Console: the imports page over 1,000,000 ledger rows, and the live board at 500 events/s to 50 browsers.

The console runs as a process (``conduit console``) against its own schema and
Redis database. The imports page is timed over HTTP (signed in, rendered HTML)
for each kind of filter, and each filter's SQL is EXPLAINed to show which
index answers it; the peer in the same run is OFFSET pagination of the same
query at the same depth, which keyset pagination replaces. The board is fed
500 events a second straight into Redis while 50 SSE clients listen; a probe
run's row count, bumped every 50 ms, tells each client how late it sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench._report import DOC, write_section

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".run" / "bench-console"
SCHEMA = "bench_console"
REDIS_DB = "11"
TOKEN = "bench-console-token"
PORT = 8093
PROBE = 999_999_999
TARGET_P95_MS = 150.0
TARGET_LAG_S = 1.0
TARGET_RSS_MB = 150.0
MODULES = 60
ERRORS = [
    "too_many_rejects: 812 of 10000 rows rejected, more than the module allows",
    "http_502: the proxy answered 502 Bad Gateway",
    "not_a_zip: the export is not a zip archive",
    "missing_columns: the CSV lacks the required column invoice_id",
    "timeout: the import ran longer than IMPORTER_IMPORT_TIMEOUT",
]


@dataclass
class Figures:
    rows: int
    tenants: int
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)
    offset_peer: dict[str, float] = field(default_factory=dict)
    board: dict[str, Any] = field(default_factory=dict)
    rss_mb: float = 0.0
    hwm_mb: float = 0.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench console", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--requests", type=int, default=100, help="requests per imports-page variant")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=int, default=500, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--reuse", action="store_true", help="keep the ledger of the last run when it has --rows")
    opts = parser.parse_args(argv)
    figures = asyncio.run(_bench(opts))
    text = report(figures, opts)
    print(text)
    if not opts.no_write:
        write_section(DOC, "console", text)
    ok = all(p["p95_ms"] < TARGET_P95_MS and p["index"] for p in figures.pages.values())
    ok = ok and figures.board["p95_lag_s"] < TARGET_LAG_S and figures.hwm_mb < TARGET_RSS_MB
    return 0 if ok else 1


async def _bench(opts: argparse.Namespace) -> Figures:
    from devtools.servers import ensure_servers

    WORK.mkdir(parents=True, exist_ok=True)
    urls = ensure_servers(ROOT / ".run" / "servers")
    dsn, redis_url = await _prepare(urls, opts)
    figures = Figures(opts.rows, opts.tenants)
    proc = _start_console(dsn, redis_url, opts)
    try:
        await _wait_ready()
        await _imports_page(dsn, opts, figures)
        await _board(redis_url, opts, figures)
        figures.rss_mb, figures.hwm_mb = _memory(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return figures


# --- data ---------------------------------------------------------------------------------------------------


async def _prepare(urls: dict[str, str], opts: argparse.Namespace) -> tuple[str, str]:
    import asyncpg
    from redis.asyncio import Redis

    from conduit.db_cli import migrate

    base = urls["CONDUIT_DATABASE_URL"]
    dsn = f"{base}{'&' if '?' in base else '?'}search_path={SCHEMA}"
    redis_url = urls["CONDUIT_REDIS_URL"].rsplit("/", 1)[0] + "/" + REDIS_DB
    if opts.reuse and await _rows(dsn) == opts.rows:
        return dsn, redis_url
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
    finally:
        await conn.close()
    await migrate(dsn, ROOT / "migrations")
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.execute(_FILL, opts.rows, opts.tenants, MODULES, ERRORS)
        await conn.execute("ANALYZE import_runs")
        print(f"ledger: {opts.rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    finally:
        await conn.close()
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    return dsn, redis_url


async def _rows(dsn: str) -> int:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return -1
    try:
        return int(await conn.fetchval("SELECT count(*) FROM import_runs"))
    except asyncpg.PostgresError:
        return -1
    finally:
        await conn.close()


# One row per (tenant, module, day) attempt, newest days last, a few percent failed with an error message.
_FILL = """
INSERT INTO import_runs (tenant_id, module, export_date, attempt, job_id, status, rows_read, rows_imported,
                         rows_rejected, stage_seconds, error_class, error_message, parse_path,
                         queued_at, started_at, finished_at)
SELECT 't' || lpad((n % $2)::text, 3, '0'), 'module_' || lpad(((n / $2) % $3)::text, 2, '0'),
       date '2024-01-01' + (n / ($2 * $3))::int, 1, 'import:bench:' || n,
       CASE WHEN n % 29 = 0 THEN 'failed' WHEN n % 31 = 0 THEN 'partially_rejected' ELSE 'succeeded' END,
       10000, CASE WHEN n % 29 = 0 THEN 0 ELSE 10000 END, CASE WHEN n % 31 = 0 THEN 12 ELSE 0 END,
       '{"total": 1.5}'::jsonb,
       CASE WHEN n % 29 = 0 THEN split_part(($4::text[])[1 + n % 5], ':', 1) END,
       CASE WHEN n % 29 = 0 THEN ($4::text[])[1 + n % 5] END,
       CASE WHEN n % 7 = 0 THEN 'careful: COPY: invalid input syntax' ELSE 'fast' END,
       now(), now(), now()
FROM generate_series(1, $1) AS n
"""


# --- the console process --------------------------------------------------------------------------------------


def _start_console(dsn: str, redis_url: str, opts: argparse.Namespace) -> subprocess.Popen[bytes]:
    tenants = {f"t{i:03d}": {"providers": {"demo": {"client_id": f"t{i:03d}"}}} for i in range(opts.tenants)}
    providers = {"demo": {"token_url": "http://127.0.0.1:9/token", "api_base_url": "http://127.0.0.1:9/",
                          "client_auth_method": "none"}}  # fmt: skip
    path = WORK / "tenants.yaml"
    path.write_text(yaml.safe_dump({"providers": providers, "tenants": tenants}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env |= {
        "CONDUIT_DATABASE_URL": dsn, "CONDUIT_REDIS_URL": redis_url, "CONDUIT_TENANTS_FILE": str(path),
        "CONDUIT_CONSOLE_TOKEN": TOKEN, "CONDUIT_CONSOLE_PORT": str(PORT), "CONDUIT_CONSOLE_HOST": "127.0.0.1",
        "CONDUIT_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    conduit = str(Path(sys.executable).with_name("conduit"))
    log = (WORK / "console.log").open("wb")
    return subprocess.Popen([conduit, "console"], env=env, stdout=log, stderr=subprocess.STDOUT)


async def _wait_ready() -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"http://127.0.0.1:{PORT}/ready") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"the console did not become ready; see {WORK / 'console.log'}")


async def _signed_in() -> Any:
    import aiohttp

    http = aiohttp.ClientSession(
        f"http://127.0.0.1:{PORT}", connector=aiohttp.TCPConnector(limit=200), cookie_jar=aiohttp.CookieJar(unsafe=True)
    )
    async with http.get("/login") as page:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert csrf is not None
    async with http.post("/login", data={"csrf": csrf[1], "token": TOKEN}) as answer:
        assert answer.status == 200, answer.status
    return http


def _memory(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    return int(found["VmRSS"]) / 1024, int(found["VmHWM"]) / 1024


# --- the imports page ------------------------------------------------------------------------------------------


def _variants(opts: argparse.Namespace) -> dict[str, str]:
    return {
        "no filter": "",
        "tenant": "tenant=t042",
        "tenant + failed": "tenant=t042&status=failed",
        "failed": "status=failed",
        "module + date range": "module=module_07&from=2024-02-01&to=2024-02-29",
        "error words": "q=gateway",
        "path": "path=careful",
        "by export date": "sort=export_date&dir=asc",
    }


async def _imports_page(dsn: str, opts: argparse.Namespace, figures: Figures) -> None:
    http = await _signed_in()
    try:
        for name, query in _variants(opts).items():
            times = []
            for _ in range(opts.requests):
                started = time.perf_counter()
                async with http.get(f"/imports?{query}") as answer:
                    await answer.read()
                    assert answer.status == 200, (name, answer.status)
                times.append((time.perf_counter() - started) * 1000)
            figures.pages[name] = {"p50_ms": statistics.median(times), "p95_ms": _p95(times)}
        deep, sql_only = await _deep_page(http, dsn)
        figures.pages["page 200 (keyset)"] = deep
        figures.offset_peer = sql_only
    finally:
        await http.close()
    await _explain(dsn, figures)


async def _deep_page(http: Any, dsn: str) -> tuple[dict[str, Any], float]:
    """Follow Next 200 times, then time that page; the peer is the same page by OFFSET, in SQL alone."""
    import asyncpg

    url = "/imports?status=succeeded"
    for _ in range(199):
        async with http.get(url) as answer:
            found = re.search(r'rel="next" href="([^"]+)"', await answer.text())
        assert found is not None
        url = found[1].replace("&amp;", "&")
    times = []
    for _ in range(50):
        started = time.perf_counter()
        async with http.get(url) as answer:
            await answer.read()
        times.append((time.perf_counter() - started) * 1000)
    from multidict import MultiDict

    from services.console.filters import parse
    from services.console.queries import list_sql

    filters = parse(MultiDict(p.split("=", 1) for p in url.partition("?")[2].split("&")), 200)
    keyset_sql, args = list_sql(filters, 51)
    offset_sql = list_sql(parse(MultiDict(status="succeeded"), 200), 51)[0] + " OFFSET 9950"
    conn = await asyncpg.connect(dsn)
    try:
        keyset, offset = [], []
        for _ in range(20):
            started = time.perf_counter()
            await conn.fetch(keyset_sql, *args)
            keyset.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await conn.fetch(offset_sql, "succeeded", 51)
            offset.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    page = {"p50_ms": statistics.median(times), "p95_ms": _p95(times), "url": url}
    return page, {"keyset": statistics.median(keyset), "offset": statistics.median(offset)}


async def _explain(dsn: str, figures: Figures) -> None:
    import asyncpg
    from multidict import MultiDict

    from services.console.filters import parse
    from services.console.queries import list_sql

    conn = await asyncpg.connect(dsn)
    try:
        for name, page in figures.pages.items():
            query = page.get("url", "").partition("?")[2] if "url" in page else _variants_by_name()[name]
            pairs = [p.split("=", 1) for p in query.split("&") if p]
            filters = parse(MultiDict(pairs), 200)
            sql, args = list_sql(filters, 51)
            plan = orjson.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
            page["index"] = sorted(_indexes(plan[0]["Plan"]))
    finally:
        await conn.close()


def _variants_by_name() -> dict[str, str]:
    return _variants(argparse.Namespace())


def _indexes(node: dict[str, Any]) -> set[str]:
    found = {node["Index Name"]} if "Index Name" in node else set()
    for child in node.get("Plans", []):
        found |= _indexes(child)
    return found


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


# --- the live board ------------------------------------------------------------------------------------------


async def _board(redis_url: str, opts: argparse.Namespace, figures: Figures) -> None:
    from redis.asyncio import Redis

    from shared import redis_keys

    http = await _signed_in()
    sent: dict[int, float] = {}
    lags: list[float] = []
    frames = [0]
    stop = asyncio.Event()
    clients = [asyncio.create_task(_listen(http, sent, lags, frames, stop)) for _ in range(opts.clients)]
    redis = Redis.from_url(redis_url)
    await asyncio.sleep(1.0)  # every client connected and had its first frame
    started = time.perf_counter()
    published = await _publish(redis, redis_keys.events(redis), opts, sent)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1.5)  # the last probe reaches everyone
    stop.set()
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    await redis.aclose()
    await http.close()
    figures.board = {
        "clients": opts.clients, "events": published, "rate": published / elapsed, "frames": frames[0],
        "p50_lag_s": statistics.median(lags) if lags else float("inf"),
        "p95_lag_s": _p95(lags) if lags else float("inf"), "max_lag_s": max(lags) if lags else float("inf"),
        "samples": len(lags),
    }  # fmt: skip


async def _publish(redis: Any, channel: str, opts: argparse.Namespace, sent: dict[int, float]) -> int:
    """``rate`` events a second in 20 batches a second; a probe progress event every 50 ms."""
    rng = random.Random(7)
    total, seq, run_id = 0, 0, 1
    tick = 0.05
    per_tick = max(int(opts.rate * tick), 1)
    start = time.perf_counter()
    await redis.publish(channel, _event("import", "started", "probe", "probe", run_id=PROBE, job_id="probe"))
    for i in range(int(opts.seconds / tick)):
        pipe = redis.pipeline(transaction=False)
        for _ in range(per_tick - 1):
            tenant, module = f"t{rng.randrange(opts.tenants):03d}", f"module_{rng.randrange(MODULES):02d}"
            kind = ("queued", "started", "progress", "finished")[total % 4]
            topic = "job" if kind == "queued" else "import"
            job_id = f"import:{tenant}:{module}:{run_id}"
            pipe.publish(channel, _event(topic, kind, tenant, module, run_id=run_id, job_id=job_id, rows=100,
                                         status="succeeded"))  # fmt: skip
            run_id += kind == "finished"
            total += 1
        seq += 1
        sent[seq] = time.perf_counter()
        pipe.publish(channel, _event("import", "progress", "probe", "probe", run_id=PROBE, rows=seq))
        total += 1
        await pipe.execute()
        await asyncio.sleep(max(start + (i + 1) * tick - time.perf_counter(), 0))
    return total


def _event(topic: str, kind: str, tenant: str, module: str, **fields: Any) -> bytes:
    return orjson.dumps(
        {"topic": topic, "event": kind, "at": time.time(), "tenant": tenant, "module": module, **fields}
    )


async def _listen(http: Any, sent: dict[int, float], lags: list[float], frames: list[int], stop: asyncio.Event) -> None:
    import aiohttp

    pattern = re.compile(rf"run {PROBE}</a> ([\d,]+) rows")
    seen = 0
    async with http.get("/board/stream", timeout=aiohttp.ClientTimeout(total=None)) as stream:
        while not stop.is_set():
            frame = await stream.content.readuntil(b"\n\n")
            if not frame:
                return
            frames[0] += 1
            found = pattern.search(frame.decode())
            if found:
                seq = int(found[1].replace(",", ""))
                if seq > seen and seq in sent:
                    lags.append(time.perf_counter() - sent[seq])
                    seen = seq


# --- the report ------------------------------------------------------------------------------------------------


def report(f: Figures, opts: argparse.Namespace) -> str:
    lines = [
        "## Console",
        "",
        f"`python -m bench console`: {f.rows:,} ledger rows of {f.tenants} tenants x {MODULES} modules; the console "
        f"as a process (`conduit console`), timed over HTTP, signed in, {opts.requests} requests per filter. "
        f"Targets: imports page p95 < {TARGET_P95_MS:.0f} ms with an index; board lag < {TARGET_LAG_S:.0f} s at "
        f"{opts.rate} events/s to {opts.clients} SSE clients; console < {TARGET_RSS_MB:.0f} MB.",
        "",
        "| imports page | p50 ms | p95 ms | index (EXPLAIN) |",
        "|---|---:|---:|---|",
    ]
    for name, page in f.pages.items():
        lines.append(
            f"| {name} | {page['p50_ms']:.1f} | {page['p95_ms']:.1f} | {', '.join(page.get('index', [])) or 'none'} |"
        )
    peer = f.offset_peer
    lines += [
        "",
        f"Page 200 of `status=succeeded` in SQL alone (median of 20): keyset {peer['keyset']:.2f} ms, the same page "
        f"by OFFSET (the peer) {peer['offset']:.2f} ms, {peer['offset'] / max(peer['keyset'], 1e-6):.0f}x; "
        "OFFSET grows with the depth, keyset does not.",
    ]
    b = f.board
    lines += [
        "",
        "| live board | figure |",
        "|---|---:|",
        f"| events published | {b['events']:,} at {b['rate']:.0f}/s |",
        f"| SSE clients | {b['clients']} |",
        f"| frames received (all clients) | {b['frames']:,} |",
        f"| lag p50 / p95 / max (s) | {b['p50_lag_s']:.3f} / {b['p95_lag_s']:.3f} / {b['max_lag_s']:.3f} |",
        f"| console memory after (RSS / peak, MB) | {f.rss_mb:.0f} / {f.hwm_mb:.0f} |",
    ]
    return "\n".join(lines) + "\n"
