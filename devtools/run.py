"""``make run``: the whole suite on this machine, with the demo third party, until Ctrl-C.

Redis and PostgreSQL come from ``devtools.servers`` (the configured ones when
they answer, else throwaway servers, which stop with the rest on Ctrl-C). The
demo's tenants file, secrets and token key are generated under ``.run/demo``
and kept between runs; ``.run/demo/env`` holds what a caller (the ``conduit``
command) needs to reach them, and nothing that steers devtools.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis
import yaml
from cryptography.fernet import Fernet

from devtools.servers import ensure_servers, stop_servers
from shared import redis_keys

ROOT = Path(__file__).resolve().parent.parent
# Overridable so a test can run the whole launcher without touching a developer's own .run.
RUN = Path(os.environ.get("CONDUIT_RUN_DIR") or ROOT / ".run")
# What a caller sourcing .run/demo/env needs: the stores, the tenants file and its secrets, the key.
# Not CONDUIT_FORCE_THROWAWAY / CONDUIT_SERVER_SOURCE, which would steer a later `make test`.
CALLER_ENV = (
    "CONDUIT_REDIS_URL",
    "CONDUIT_DATABASE_URL",
    "CONDUIT_TENANTS_FILE",
    "CONDUIT_TOKEN_KEY",
    "CONDUIT_PROXY_URL",
)
DEMO_TENANTS = ("acme", "globex", "initech")
PORTS = {"demo-api": 8090, "proxy": 8080, "importer": 8081, "scheduler": 8082, "console": 8083}
DEMO_IMPORT_SPREAD = "30s"


def demo_config(directory: Path, demo_url: str) -> dict[str, str]:
    """Write the demo tenants file and return the environment that goes with it."""
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "token.key"
    if not key_file.exists():
        key_file.write_text(Fernet.generate_key().decode())
        key_file.chmod(0o600)
    env = {"CONDUIT_TOKEN_KEY": key_file.read_text().strip()}
    tenants = {}
    clients = []
    for tenant in DEMO_TENANTS:
        secret_var = f"CONDUIT_SECRET_{tenant.upper()}_DEMO"
        env[secret_var] = f"{tenant}-demo-secret"
        clients.append(f"{tenant}-demo={tenant}-demo-secret")
        tenants[tenant] = {"providers": {"demo": {"client_id": f"{tenant}-demo", "client_secret": {"env": secret_var}}}}
    provider = {
        "token_url": f"{demo_url}/oauth/token",
        "api_base_url": f"{demo_url}/api/",
        "grant_type": "client_credentials",
        "scopes": ["read", "export"],
    }
    # The daily fire (02:00 UTC) was at most a day ago, so the scheduler catches it up at start,
    # spread over this window: the demo's imports begin within seconds, not over an hour.
    imports = {"spread": DEMO_IMPORT_SPREAD}
    path = directory / "tenants.yaml"
    path.write_text(
        yaml.safe_dump({"imports": imports, "providers": {"demo": provider}, "tenants": tenants}, sort_keys=False)
    )
    env["CONDUIT_TENANTS_FILE"] = str(path)
    env["CONDUIT_DEMO_CLIENTS"] = ";".join(clients)
    return env


def _port(name: str) -> int:
    return int(os.environ.get(f"CONDUIT_RUN_{name.upper().replace('-', '_')}_PORT", PORTS[name]))


def _wait_ready(
    name: str, proc: subprocess.Popen[bytes], url: str, log: Path, stopping: list[int], timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if stopping:
                return  # Ctrl-C while starting: it stopped because it was asked to
            raise SystemExit(f"{name} exited with {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{name} did not become ready at {url} within {timeout:.0f}s; see {log}")


def main() -> None:
    # Throwaway servers daemonize into sessions of their own, so Ctrl-C never reaches them: stop them here.
    # Servers configured through CONDUIT_REDIS_URL / CONDUIT_DATABASE_URL are not ours and are left alone.
    try:
        _run_suite()
    finally:
        stop_servers(RUN / "servers")
    print("conduit: all processes stopped, throwaway Redis/PostgreSQL included")


def _run_suite() -> None:
    urls = ensure_servers(RUN / "servers")
    demo_url = f"http://127.0.0.1:{_port('demo-api')}"
    env = {**os.environ, **urls, **demo_config(RUN / "demo", demo_url)}
    env |= {
        "CONDUIT_DEMO_PORT": str(_port("demo-api")),
        "CONDUIT_DEMO_TOKEN_LIFETIME": env.get("CONDUIT_DEMO_TOKEN_LIFETIME", "120"),
        "CONDUIT_PROXY_PORT": str(_port("proxy")),
        "CONDUIT_IMPORTER_HTTP_PORT": str(_port("importer")),
        "CONDUIT_SCHEDULER_HTTP_PORT": str(_port("scheduler")),
        "CONDUIT_CONSOLE_PORT": str(_port("console")),
        "CONDUIT_CONSOLE_PUBLIC_URL": f"http://127.0.0.1:{_port('console')}",
        "CONDUIT_CONSOLE_TOKEN": env.get("CONDUIT_CONSOLE_TOKEN") or _console_token(),
        "CONDUIT_PROXY_URL": f"http://127.0.0.1:{_port('proxy')}",
        # Rows per demo export; the whole daily cycle is 3 tenants x 60 modules of this many.
        "CONDUIT_DEMO_EXPORT_ROWS": env.get("CONDUIT_DEMO_EXPORT_ROWS", "1000"),
        "CONDUIT_DEMO_EXPORT_CACHE_DIR": env.get("CONDUIT_DEMO_EXPORT_CACHE_DIR", str(RUN / "demo" / "exports")),
    }
    logs = RUN / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    conduit = str(Path(sys.executable).with_name("conduit"))
    procs: dict[str, subprocess.Popen[bytes]] = {}

    stopping: list[int] = []

    def stop(*signum: object) -> None:
        if signum:
            stopping.append(1)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        _migrate(conduit, env, logs / "migrate.log")
        _forget_demo_tokens(env["CONDUIT_REDIS_URL"])
        for name in ("demo-api", "proxy", "importer", "scheduler", "console"):
            if stopping:
                break
            log = logs / f"{name}.log"
            with log.open("ab") as handle:
                procs[name] = subprocess.Popen([conduit, name], env=env, stdout=handle, stderr=subprocess.STDOUT)
            check = "/health_check" if name == "demo-api" else "/ready"
            _wait_ready(name, procs[name], f"http://127.0.0.1:{_port(name)}{check}", log, stopping)
        if not stopping:
            _banner(env, logs)
        for proc in procs.values():
            proc.wait()
    finally:
        stop()
        for proc in procs.values():
            proc.wait(timeout=30)


def _forget_demo_tokens(redis_url: str) -> None:
    """Drop the demo tenants' token records left in Redis by an earlier run.

    The demo API keeps the tokens it issued in memory, so a record from before this run is no good to it;
    and one sealed under another key (another clone's, or one that `make clean` removed) would keep the
    proxy from ever being ready. The refresher fetches fresh ones at once.
    """
    client = redis.Redis.from_url(redis_url)
    try:
        for tenant in DEMO_TENANTS:
            client.delete(redis_keys.token(tenant, "demo"))
            client.zrem(redis_keys.TOKENS_DUE, redis_keys.pair_member(tenant, "demo"))
    finally:
        client.close()


def _console_token() -> str:
    """The local console's admin token: made once, kept in .run/console-token (readable by this user only)."""
    path = RUN / "console-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def _migrate(conduit: str, env: dict[str, str], log: Path) -> None:
    """The importer refuses to start on a database without the module tables, so migrate first."""
    with log.open("ab") as handle:
        done = subprocess.run([conduit, "migrate"], env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"conduit migrate failed; see {log}:\n{log.read_text()[-2000:]}")


def _banner(env: dict[str, str], logs: Path) -> None:
    proxy = env["CONDUIT_PROXY_URL"]
    print(
        f"""
Conduit is running (Ctrl-C stops everything).

  auth proxy      {proxy}       try: curl -H 'X-Tenant-ID: acme' {proxy}/resources/42
  proxy metrics   {proxy}/metrics
  importer ops    http://127.0.0.1:{env["CONDUIT_IMPORTER_HTTP_PORT"]}/ready  (/metrics)
  scheduler ops   http://127.0.0.1:{env["CONDUIT_SCHEDULER_HTTP_PORT"]}/ready  (/metrics)
  console         {env["CONDUIT_CONSOLE_PUBLIC_URL"]}  sign in with the token in {RUN}/console-token
  demo API        http://127.0.0.1:{env["CONDUIT_DEMO_PORT"]}  (tokens live {env["CONDUIT_DEMO_TOKEN_LIFETIME"]} s)
  Redis           {env["CONDUIT_REDIS_URL"]}
  PostgreSQL      {env["CONDUIT_DATABASE_URL"]}
  logs            {logs}/*.log (JSON lines)

  token status:   set -a; . {RUN}/demo/env; set +a; .venv/bin/conduit tokens status
  imports:        the day's {len(DEMO_TENANTS)} x 60 demo imports start within {DEMO_IMPORT_SPREAD}; with the env above:
                  .venv/bin/conduit imports list          (--status failed, imports show RUN_ID)
                  .venv/bin/conduit queue status
                  psql '{env["CONDUIT_DATABASE_URL"]}' \\
                    -c 'SELECT tenant_id, module, status, rows_imported FROM import_runs ORDER BY id DESC LIMIT 20'
""",
        flush=True,
    )
    env_file = RUN / "demo" / "env"
    keep = [k for k in env if k in CALLER_ENV or k.startswith("CONDUIT_SECRET_")]
    env_file.write_text("".join(f"{k}={shlex.quote(env[k])}\n" for k in sorted(keep)))
    env_file.chmod(0o600)


if __name__ == "__main__":
    main()
