"""Auth proxy against nginx proxy_pass: req/s, p50/p99, CPU per request and peak memory, side by side.

Both forward ``GET /resources/<size>`` to the same static nginx upstream; nginx
adds a fixed ``Authorization`` header, the proxy its tenant's cached token. Runs
are paired (nginx and proxy back to back, order alternating per round) and the
medians reported, so drift on a shared machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import _nginx, _wrk
from bench._procs import BenchError, Service, cpu_seconds, free_port, pinned, rss_bytes, wait_http
from bench._proxy_report import Row, render, summarise
from bench._report import DOC, section, write_section
from devtools.pki import make_pki

SIZES = {"1k": 1024, "1m": 1 << 20}
CONNECTIONS = (64, 256)
TENANT, PROVIDER, CLIENT, SECRET = "acme", "api", "bench-client", "bench-client-secret"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Layout:
    """Where the side under test runs, and where the load generator and upstream run."""

    name: str
    processes: int
    target_cpus: str | None
    load_cpus: str | None
    wrk_threads: int
    upstream_tls: bool = False


LAYOUTS = {
    "one-core": Layout("one-core", 1, "0", "1", 1),
    # As production: the provider's API is https://, so the body cannot be spliced and both sides decrypt.
    "one-core-tls": Layout("one-core-tls", 1, "0", "1", 1, upstream_tls=True),
    # One wrk thread here too: on two cores a second one only takes CPU from the side under test.
    "two-process": Layout("two-process", 2, None, None, 1),
}


@dataclass
class Run:
    target: str
    rps: float
    p50: float
    p99: float
    cpu_us: float
    peak_mb: float
    socket_errors: int
    bad_status: int
    log_problems: dict[str, int] = field(default_factory=dict)


@dataclass
class Config:
    layout: str
    size: str
    connections: int
    runs: list[Run] = field(default_factory=list)


def main(argv: list[str]) -> int:
    opts = _options(argv)
    problem = _missing_tools()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        configs = _bench(opts)
    except BenchError as exc:
        print(f"bench proxy: {exc}", file=sys.stderr)
        return 1
    rows = [summarise(c.layout, c.size, c.connections, c.runs) for c in configs]
    results = render(rows, _environment(opts))
    print("\n" + results)
    _save(opts, configs, rows)
    if opts.write:
        _write_doc(results)
        print(f"written to {DOC}")
    return 0


def _write_doc(results: str) -> None:
    """Rewrite the proxy's section; the notes in it (written by hand) are kept."""
    notes = section(DOC, "proxy:notes") or "_Notes on these figures: where the time goes, what is left._\n"
    body = (
        "## Auth proxy\n\n"
        "<!-- proxy:results:begin -->\n" + results.rstrip() + "\n<!-- proxy:results:end -->\n\n"
        "<!-- proxy:notes:begin -->\n" + notes.rstrip() + "\n<!-- proxy:notes:end -->"
    )
    write_section(DOC, "proxy", body)


def _options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s, nothing written to docs")
    parser.add_argument("--rounds", type=int, help="paired rounds per configuration (default 3)")
    parser.add_argument("--duration", type=int, help="seconds per measured run (default 8)")
    parser.add_argument("--warmup", type=int, help="seconds of unmeasured load before each run (default 2)")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--connections", nargs="+", type=int, default=list(CONNECTIONS))
    parser.add_argument("--access-log", choices=("on", "off"), default="on", help="the proxy's (default: on)")
    parser.add_argument("--targets", nargs="+", choices=("nginx", "proxy"), default=["nginx", "proxy"])
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("CONDUIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"),
        help="Redis for the token store; the bench pair's keys there are deleted first",
    )
    parser.add_argument("--workdir", type=Path, help="keep configuration and logs here (default: a temporary dir)")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, help="write docs/benchmarks.md")
    opts = parser.parse_args(argv)
    quick = opts.quick
    opts.rounds = opts.rounds or (1 if quick else 3)
    opts.duration = opts.duration or (2 if quick else 8)
    opts.warmup = opts.warmup if opts.warmup is not None else (1 if quick else 2)
    if opts.write is None:
        opts.write = not quick and opts.access_log == "on" and set(opts.targets) == {"nginx", "proxy"}
    return opts


def _missing_tools() -> str | None:
    missing = [name for name, found in (("nginx", _nginx.binary()), ("wrk", shutil.which("wrk"))) if not found]
    if not shutil.which("taskset"):
        missing.append("taskset (util-linux)")
    if not missing:
        return None
    return (
        f"bench proxy: missing {', '.join(missing)}. Install them with `sudo bench/install-tools.sh` "
        "(Debian/Ubuntu: apt-get install nginx-light wrk), as the README says, then run `make bench` again."
    )


def _bench(opts: argparse.Namespace) -> list[Config]:
    if (os.cpu_count() or 1) < 2:
        raise BenchError("needs at least 2 CPUs (one for the side under test, one for load and upstream)")
    configs: list[Config] = []
    with contextlib.ExitStack() as stack:
        workdir = opts.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="conduit-bench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        _nginx.write_files(workdir, {s: SIZES[s] for s in opts.sizes})
        token_port = free_port()
        token_api = stack.enter_context(_running(_token_endpoint(workdir, token_port)))
        wait_http(token_api, f"http://127.0.0.1:{token_port}/health_check")
        for name in opts.layouts:
            layout = LAYOUTS[name]
            configs += _bench_layout(opts, layout, workdir, token_port)
    return configs


def _bench_layout(opts: argparse.Namespace, layout: Layout, workdir: Path, token_port: int) -> list[Config]:
    with contextlib.ExitStack() as stack:
        up_port, nginx_port, proxy_port = free_port(), free_port(), free_port()
        pki = make_pki(workdir) if layout.upstream_tls else None
        upstream = stack.enter_context(_running(_nginx.upstream(workdir, up_port, layout.load_cpus, pki)))
        scheme = "https" if pki else "http"
        wait_http(upstream, f"{scheme}://127.0.0.1:{up_port}/resources/{opts.sizes[0]}", ca=pki.ca if pki else None)
        targets: dict[str, Service] = {}
        if "nginx" in opts.targets:
            nginx = _nginx.baseline(
                workdir, nginx_port, up_port, layout.processes, "bench", layout.target_cpus, pki.ca if pki else None
            )
            targets["nginx"] = stack.enter_context(_running(nginx))
        if "proxy" in opts.targets:
            targets["proxy"] = stack.enter_context(
                _running(_proxy(opts, layout, workdir, proxy_port, up_port, token_port, pki.ca if pki else None))
            )
        ports = {"nginx": nginx_port, "proxy": proxy_port}
        for target, service in targets.items():
            wait_http(service, _url(ports[target], opts.sizes[0]), {"X-Tenant-ID": TENANT})
        configs = []
        for size in opts.sizes:
            for connections in opts.connections:
                config = Config(layout.name, size, connections)
                for round_no in range(opts.rounds):
                    order = list(targets) if round_no % 2 == 0 else list(reversed(targets))
                    for target in order:
                        run = _measure(opts, layout, target, targets[target], _url(ports[target], size), connections)
                        config.runs.append(run)
                        _progress(config, run)
                configs.append(config)
        return configs


def _measure(opts: argparse.Namespace, layout: Layout, target: str, service: Service, url: str, conns: int) -> Run:
    headers = {"X-Tenant-ID": TENANT}
    load = {"threads": layout.wrk_threads, "cpus": layout.load_cpus, "headers": headers}
    if opts.warmup > 0:
        _wrk.run(url, conns, opts.warmup, **load)  # type: ignore[arg-type]
    log_size = service.log.stat().st_size
    pids = service.pids()
    peak = rss_bytes(pids)

    def sample() -> None:
        nonlocal peak
        peak = max(peak, rss_bytes(pids))

    cpu_before = cpu_seconds(pids)
    result = _wrk.run(url, conns, opts.duration, while_running=sample, **load)  # type: ignore[arg-type]
    cpu = cpu_seconds(pids) - cpu_before
    if not service.alive():
        raise BenchError(f"{service.name} died during the run:\n{service.tail()}")
    return Run(
        target=target,
        rps=result.rps,
        p50=result.p50,
        p99=result.p99,
        cpu_us=cpu / max(result.requests, 1) * 1e6,
        peak_mb=peak / 1e6,
        socket_errors=result.socket_errors,
        bad_status=result.bad_status,
        log_problems=_log_problems(service.log, log_size) if target == "proxy" else {},
    )


def _log_problems(log: Path, offset: int) -> dict[str, int]:
    """Warnings and errors the proxy logged since ``offset``, by event (its access lines are at info)."""
    found: dict[str, int] = {}
    with log.open("rb") as f:
        f.seek(offset)
        for line in f:
            if b'"level":"warning"' in line or b'"level":"error"' in line:
                try:
                    event = str(json.loads(line).get("event", "?"))
                except ValueError:
                    event = line[:80].decode(errors="replace")
                found[event] = found.get(event, 0) + 1
    return found


def _proxy(
    opts: argparse.Namespace,
    layout: Layout,
    workdir: Path,
    port: int,
    up_port: int,
    token_port: int,
    upstream_ca: Path | None,
) -> Service:
    _forget_token(opts.redis_url)
    tenants = workdir / "tenants.yaml"
    tenants.write_text(
        json.dumps(
            {
                "providers": {
                    PROVIDER: {
                        "token_url": f"http://127.0.0.1:{token_port}/oauth/token",
                        "api_base_url": f"{'https' if upstream_ca else 'http'}://127.0.0.1:{up_port}",
                    }
                },
                "tenants": {
                    TENANT: {"providers": {PROVIDER: {"client_id": CLIENT, "client_secret": {"env": "BENCH_SECRET"}}}}
                },
            }
        )
    )
    from cryptography.fernet import Fernet

    env = {
        **_clean_env(),
        "BENCH_SECRET": SECRET,
        "CONDUIT_REDIS_URL": opts.redis_url,
        "CONDUIT_TENANTS_FILE": str(tenants),
        "CONDUIT_TOKEN_KEY": Fernet.generate_key().decode(),
        "CONDUIT_PROXY_HOST": "127.0.0.1",
        "CONDUIT_PROXY_PORT": str(port),
        "CONDUIT_PROXY_ACCESS_LOG": "true" if opts.access_log == "on" else "false",
        "CONDUIT_PROXY_SHUTDOWN_TIMEOUT": "2",
        "CONDUIT_LOG_LEVEL": "INFO",
    }
    if upstream_ca:
        env["CONDUIT_PROXY_UPSTREAM_CA_FILE"] = str(upstream_ca)
    command = [_conduit(), "proxy", "--processes", str(layout.processes)]
    log = workdir / "proxy.log"
    log.unlink(missing_ok=True)
    return Service("conduit proxy", pinned(command, layout.target_cpus), log, env)


def _token_endpoint(workdir: Path, port: int) -> Service:
    """The demo third party's /oauth/token: the proxy fetches its one token there at start."""
    env = {
        **_clean_env(),
        "CONDUIT_DEMO_HOST": "127.0.0.1",
        "CONDUIT_DEMO_PORT": str(port),
        "CONDUIT_DEMO_CLIENTS": f"{CLIENT}={SECRET}",
        "CONDUIT_DEMO_TOKEN_LIFETIME": "86400",
    }
    return Service("conduit demo-api", pinned([_conduit(), "demo-api"], "1"), workdir / "demo-api.log", env)


@contextlib.contextmanager
def _running(service: Service) -> Iterator[Service]:
    try:
        yield service
    finally:
        service.stop()


def _forget_token(redis_url: str) -> None:
    """A token sealed with another run's key would be unreadable: start the pair from nothing."""
    from redis import Redis
    from redis.exceptions import RedisError

    from shared import redis_keys

    client = Redis.from_url(redis_url, socket_timeout=2)
    try:
        client.delete(
            *(key(TENANT, PROVIDER) for key in (redis_keys.token, redis_keys.token_fence, redis_keys.token_lock))
        )
        client.zrem(redis_keys.TOKENS_DUE, redis_keys.pair_member(TENANT, PROVIDER))
    except (RedisError, OSError) as exc:
        raise BenchError(
            f"Redis at {redis_url} unreachable ({exc}); set CONDUIT_BENCH_REDIS_URL or --redis-url"
        ) from None
    finally:
        client.close()


def _clean_env() -> dict[str, str]:
    """This environment without CONDUIT_* settings that would change what is measured."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}


def _conduit() -> str:
    script = Path(sys.executable).parent / "conduit"
    if not script.exists():
        raise BenchError(f"{script} not found: run `make install` first")
    return str(script)


def _url(port: int, size: str) -> str:
    return f"http://127.0.0.1:{port}/resources/{size}"


def _progress(config: Config, run: Run) -> None:
    trouble = ""
    if run.socket_errors or run.bad_status or run.log_problems:
        logged = ", ".join(f"{event!r} x{n}" for event, n in run.log_problems.items()) or "none"
        trouble = f"  (socket errors {run.socket_errors}, non-2xx {run.bad_status}, logged: {logged})"
    print(
        f"{config.layout:<11} {config.size:>2} c={config.connections:<3} {run.target:<5} "
        f"{run.rps:9.0f} req/s  p50 {run.p50 * 1e3:7.2f} ms  p99 {run.p99 * 1e3:7.2f} ms  "
        f"cpu {run.cpu_us:6.0f} us/req  peak {run.peak_mb:6.1f} MB{trouble}",
        flush=True,
    )


def _environment(opts: argparse.Namespace) -> dict[str, str]:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "commit": _run(["git", "rev-parse", "--short", "HEAD"]) or "?",
        "cpu": _cpu_model(),
        "cpus": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "nginx": "nginx " + (_run([_nginx.binary() or "nginx", "-v"]) or "?").rpartition("/")[2],
        "wrk": _wrk_version(),
        "rounds": str(opts.rounds),
        "duration": f"{opts.duration:g}",
        "warmup": f"{opts.warmup:g}",
        "access_log": opts.access_log,
    }


def _wrk_version() -> str:
    words = (_run(["wrk", "-v"]) or "? ?").split()
    return words[1].rpartition("/")[2] if len(words) > 1 else "?"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return (done.stdout + done.stderr).strip() or None


def _save(opts: argparse.Namespace, configs: list[Config], rows: list[Row]) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"proxy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    data = {"options": vars(opts), "configs": [asdict(c) for c in configs], "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(data, indent=2, default=str))
    print(f"raw results: {path}")
