"""The run side of `python -m bench scheduler`: worker processes in burst mode draining the enqueued day.

``import``: the importer's own worker (``services.importer.worker.WorkerSettings``)
against a fresh PostgreSQL database and a local exports server. ``stand-in``:
a job that does no import (``bench._scheduler_worker``), to see the queue alone.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._procs import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
STAND_IN = "bench._scheduler_worker.WorkerSettings"
IMPORTER = "services.importer.worker.WorkerSettings"
BENCH_DB = "conduit_bench_scheduler"
SECRET_ENV = "CONDUIT_BENCH_SECRET"


@dataclass
class Run:
    """One drain of the day's queue by burst workers."""

    job: str
    workers: int
    worker_max_jobs: int
    run_s: float = 0.0  # first job started to last job finished
    wall_s: float = 0.0  # workers started to workers exited
    jobs_ok: int = 0
    jobs_failed: int = 0
    busy_deferrals: int = 0  # tries put back because the tenant was at its limit
    peak_per_tenant: int = 0
    tenant_limit: int | None = None
    redis_cpu_s: float = 0.0
    postgres_cpu_s: float | None = None
    workers_cpu_s: float = 0.0
    import_ms: dict[str, float] = field(default_factory=dict)  # mean per import, by stage, from the ledger


class RunError(Exception):
    """The run side cannot go on; the message says why."""


def run_workers(target: str, env: dict[str, str], count: int, workdir: Path, f: Run) -> None:
    """Start ``count`` burst workers of ``target``, wait for them, and record time and CPU."""
    arq = str(Path(sys.executable).with_name("arq"))
    env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    logs = [workdir / f"worker-{i}.log" for i in range(count)]
    redis_cpu, children = _redis_cpu(env["CONDUIT_REDIS_URL"]), resource.getrusage(resource.RUSAGE_CHILDREN)
    postgres = _PostgresCpu()
    started = time.perf_counter()
    procs = [_start(arq, target, env, log) for log in logs]
    codes = [_wait(p, postgres) for p in procs]
    f.wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    f.workers_cpu_s = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    f.redis_cpu_s = _redis_cpu(env["CONDUIT_REDIS_URL"]) - redis_cpu
    f.postgres_cpu_s = postgres.total()
    if any(codes):
        raise RunError("a worker failed:\n" + "\n".join(log.read_text(errors="replace")[-2000:] for log in logs))


def _wait(proc: subprocess.Popen[bytes], postgres: _PostgresCpu) -> int:
    deadline = time.monotonic() + 3600
    while (code := proc.poll()) is None:
        if time.monotonic() > deadline:
            raise RunError("a worker did not finish within an hour")
        postgres.sample()
        time.sleep(0.2)
    return code


class _PostgresCpu:
    """CPU of PostgreSQL's processes on this machine, sampled: backends come and go with the workers' pools."""

    def __init__(self) -> None:
        self._first = {pid: cpu_seconds([pid]) for pid in postgres_pids()}
        self._last = dict(self._first)

    def sample(self) -> None:
        for pid in postgres_pids():
            self._last[pid] = cpu_seconds([pid])

    def total(self) -> float | None:
        self.sample()
        if not self._last:
            return None
        return sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())


def _start(arq: str, target: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # Logs go to files: a pipe nobody reads while waiting on the other worker would fill and stall it.
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([arq, target, "--burst"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


async def stand_in_outcome(redis_url: str, f: Run) -> None:
    """Jobs done, first start to last finish, and the peak per tenant the stand-in counted."""
    from bench._scheduler_worker import PEAK
    from shared.job_json import JsonArqRedis

    redis = JsonArqRedis.from_url(redis_url)
    try:
        results = await _results(redis)
        f.jobs_ok = sum(r.success for r in results)
        f.jobs_failed = len(results) - f.jobs_ok
        f.run_s = _span((r.start_time, r.finish_time) for r in results)
        found: dict[bytes, bytes] = await redis.hgetall(PEAK)
        peaks = [int(v) for v in found.values()]
        f.peak_per_tenant = max(peaks, default=0)
    finally:
        await redis.aclose()


async def _results(redis: Any) -> list[Any]:
    from arq.jobs import deserialize_result

    from shared.job_json import loads

    keys = [k async for k in redis.scan_iter(match="arq:result:*", count=1000)]
    found = []
    for start in range(0, len(keys), 1000):
        found += [
            deserialize_result(raw, deserializer=loads) for raw in await redis.mget(keys[start : start + 1000]) if raw
        ]
    return found


async def fresh_database(admin_dsn: str) -> str:
    """Drop and create the bench's own database next to ``admin_dsn``'s; returns its DSN."""
    import asyncpg

    try:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RunError(f"PostgreSQL at {admin_dsn} unreachable ({exc}); set CONDUIT_BENCH_DATABASE_URL") from None
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {BENCH_DB}")
    finally:
        await conn.close()
    base, _, _ = admin_dsn.partition("?")
    return base.rsplit("/", 1)[0] + f"/{BENCH_DB}"


def migrate(dsn: str) -> None:
    conduit = str(Path(sys.executable).with_name("conduit"))
    env = {**os.environ, "CONDUIT_DATABASE_URL": dsn}
    done = subprocess.run([conduit, "migrate"], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RunError(f"conduit migrate failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


async def import_outcome(dsn: str, redis_url: str, f: Run) -> None:
    """From the importer's ledger: outcomes, first start to last finish, overlap per tenant, stage times."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tenant_id, status, started_at, finished_at, stage_seconds::text AS stages FROM import_runs"
        )
    finally:
        await conn.close()
    done = [r for r in rows if r["status"] in ("succeeded", "partially_rejected")]
    f.jobs_ok, f.jobs_failed = len(done), sum(r["status"] == "failed" for r in rows)
    f.run_s = _span((r["started_at"], r["finished_at"]) for r in done)
    f.peak_per_tenant = max(_peak_overlap(done).values(), default=0)
    stages: Counter[str] = Counter()
    for r in done:
        stages.update(json.loads(r["stages"] or "{}"))
    f.import_ms = {k: round(v * 1000 / max(len(done), 1), 2) for k, v in stages.most_common()}
    f.busy_deferrals = await _busy_deferrals(redis_url)


async def _busy_deferrals(redis_url: str) -> int:
    """Tries beyond the first that arq made: with transient failures excluded, the waits for a tenant slot."""
    from shared.job_json import JsonArqRedis

    redis = JsonArqRedis.from_url(redis_url)
    try:
        return sum(max(r.job_try - 1, 0) for r in await _results(redis))
    finally:
        await redis.aclose()


def _peak_overlap(runs: Iterable[Any]) -> dict[str, int]:
    """The most runs of one tenant that were running at the same moment, per tenant."""
    events: dict[str, list[tuple[datetime, int]]] = {}
    for r in runs:
        if r["started_at"] and r["finished_at"]:
            events.setdefault(r["tenant_id"], []).extend([(r["started_at"], 1), (r["finished_at"], -1)])
    peaks = {}
    for tenant, marks in events.items():
        running = peak = 0
        for _, step in sorted(marks, key=lambda m: (m[0], m[1])):  # an end before a start at the same instant
            running += step
            peak = max(peak, running)
        peaks[tenant] = peak
    return peaks


def _span(pairs: Iterable[tuple[datetime | None, datetime | None]]) -> float:
    known = [(a, b) for a, b in pairs if a and b]
    if not known:
        return 0.0
    return (max(b for _, b in known) - min(a for a, _ in known)).total_seconds()


def postgres_pids() -> list[int]:
    """PostgreSQL's processes on this machine (empty when it runs elsewhere)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(f"/proc/{entry.name}/comm").read_text().strip() in ("postgres", "postmaster"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _redis_cpu(url: str) -> float:
    from redis import Redis

    client = Redis.from_url(url)
    try:
        info: dict[str, Any] = client.info("cpu")  # type: ignore[assignment]
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()
