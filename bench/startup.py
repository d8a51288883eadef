"""Start-to-ready of every service: process start until its /ready (demo: /health_check) answers 200.

Measured without a container, as the deployment issue asks: five starts each, medians. Uses the
configured (or throwaway) Redis and PostgreSQL and a migrated schema of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import asyncpg
import redis

from bench._report import write_section
from devtools.processes import free_port
from devtools.run import demo_config
from devtools.servers import ensure_servers

ROOT = Path(__file__).resolve().parent.parent
CONDUIT = str(Path(sys.executable).with_name("conduit"))
SERVICES = [
    ("proxy", "CONDUIT_PROXY_PORT", "/ready"),
    ("importer", "CONDUIT_IMPORTER_HTTP_PORT", "/ready"),
    ("scheduler", "CONDUIT_SCHEDULER_HTTP_PORT", "/ready"),
    ("demo-api", "CONDUIT_DEMO_PORT", "/health_check"),
]


def _time_to_ready(env: dict[str, str], name: str, port_var: str, path: str, timeout: float = 30.0) -> float:
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [CONDUIT, name], env={**env, port_var: str(port)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while time.perf_counter() - started < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
            # Polling another process's port: nothing to wait on but the port itself.
            time.sleep(0.01)
        raise SystemExit(f"{name} was not ready within {timeout:.0f} s")
    finally:
        proc.terminate()
        proc.wait(30)


def _db(url: str, number: int) -> str:
    root, _, last = url.rpartition("/")
    return f"{root}/{number}" if last.isdigit() else f"{url.rstrip('/')}/{number}"


async def _sql(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    urls = ensure_servers(ROOT / ".run" / "servers")
    schema = f"bench_startup_{secrets.token_hex(4)}"
    base = urls["CONDUIT_DATABASE_URL"]
    asyncio.run(_sql(base, f"CREATE SCHEMA {schema}"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, **urls, **demo_config(Path(tmp), f"http://127.0.0.1:{free_port()}")}
            env |= {"CONDUIT_DATABASE_URL": f"{base}{'&' if '?' in base else '?'}search_path={schema}"}
            env |= {"CONDUIT_PROXY_HOST": "127.0.0.1", "CONDUIT_LOG_LEVEL": "WARNING"}
            # A Redis database of the bench's own: tokens sealed with another key elsewhere would
            # (rightly) keep the proxy from being ready.
            env["CONDUIT_REDIS_URL"] = os.environ.get(
                "CONDUIT_BENCH_STARTUP_REDIS_URL", _db(urls["CONDUIT_REDIS_URL"], 10)
            )
            redis.Redis.from_url(env["CONDUIT_REDIS_URL"]).flushdb()
            subprocess.run([CONDUIT, "migrate"], env=env, check=True, capture_output=True)
            rows = []
            for name, port_var, path in SERVICES:
                runs = [_time_to_ready(env, name, port_var, path) for _ in range(args.runs)]
                rows.append((name, path, statistics.median(runs), min(runs), max(runs)))
    finally:
        asyncio.run(_sql(base, f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    body = [
        "## Start-to-ready",
        "",
        f"`python -m bench startup`: `conduit <service>` started {args.runs} times each, without a container, "
        "until its endpoint answers 200 (target: under 2 s).",
        "",
        "| service | endpoint | median | fastest | slowest |",
        "|---|---|--:|--:|--:|",
        *(f"| {n} | `{p}` | {m:.2f} s | {lo:.2f} s | {hi:.2f} s |" for n, p, m, lo, hi in rows),
    ]
    print("\n".join(body))
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", "startup", "\n".join(body))
    return 0
