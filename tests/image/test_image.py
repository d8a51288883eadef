"""Build the Dockerfile with buildah from local Debian bases and run the whole suite from the image.

Every Conduit process (migrate, demo-api, proxy, worker, scheduler, the CLI) runs from the image as its
non-root user with a read-only root file system, against this machine's Redis and PostgreSQL on
127.0.0.1 (a leased Redis database and a database of this test's own): /ready answers 200 on each, a
request goes through the proxy, an import lands in PostgreSQL, and every process stops on SIGTERM.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml
from redis import Redis as SyncRedis

from devtools import image
from devtools.probes import run_sync
from devtools.processes import free_port, wait_until
from devtools.run import demo_config

pytestmark = pytest.mark.timeout(1800)
EXPORT_DATE = "2026-11-25"


@pytest.fixture(scope="module")
def built() -> Iterator[str]:
    if missing := image.missing_tools():
        pytest.fail(f"missing {', '.join(missing)}: run deploy/install-image-tools.sh as root")
    image.build(image.TAG, image.local_bases())
    yield image.TAG
    # Earlier builds' layers that no tag uses any more: without this every CI run on a kept machine adds ~100 MB.
    subprocess.run(["podman", "image", "prune", "--force"], capture_output=True)


@pytest.fixture
def empty_redis(redis_url: str) -> Iterator[str]:
    """This session's leased Redis database, empty before and after (an earlier run's tokens, sealed with
    another key, would make the token store unreadable)."""
    client = SyncRedis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def database(server_urls: dict[str, str]) -> Iterator[str]:
    """A database of this module's own on the machine's PostgreSQL, dropped afterwards."""
    admin = server_urls["CONDUIT_DATABASE_URL"]
    name = f"conduit_image_{secrets.token_hex(4)}"
    run_sync(_execute(admin, f"CREATE DATABASE {name}"))
    parts = urlsplit(admin)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    run_sync(_execute(admin, f"DROP DATABASE {name} WITH (FORCE)"))


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


def test_the_image_runs_as_non_root_with_a_read_only_root(built: str) -> None:
    config = json.loads(image.run(["buildah", "inspect", "--type", "image", built]))["Docker"]["config"]
    assert config["User"] == "65532:65532"
    container = image.Container(built, f"conduit-image-test-probe-{secrets.token_hex(3)}")
    try:
        probe = (
            "import os\n"
            "print('uid', os.getuid(), os.getgid())\n"
            "for path in ('/x', '/app/x', '/opt/venv/x', '/etc/x', '/tmp/x'):\n"
            "    try:\n"
            "        open(path, 'w').close(); print('writable', path)\n"
            "    except OSError as error:\n"
            "        print('refused', path, error.strerror)\n"
        )
        code, output = container.execute("/usr/bin/python3.11", "-c", probe)
    finally:
        container.remove()
    assert code == 0, output
    assert "uid 65532 65532" in output
    for path in ("/x", "/app/x", "/opt/venv/x", "/etc/x"):
        assert f"refused {path} Read-only file system" in output, output
    assert "writable /tmp/x" in output


def test_the_suite_from_the_image_serves_imports_and_stops(
    built: str, database: str, empty_redis: str, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in ("demo-api", "proxy", "importer", "scheduler")}
    demo_url = f"http://127.0.0.1:{ports['demo-api']}"
    host_env = demo_config(tmp_path / "demo", demo_url)
    tenants = Path(host_env.pop("CONDUIT_TENANTS_FILE"))
    # No daily imports: the scheduler would catch up yesterday's for every demo tenant, and those landing
    # before the checks below (a slow start) made more than the one invoices run this test counts.
    config = yaml.safe_load(tenants.read_text())
    for tenant in config["tenants"].values():
        tenant["imports"] = {"include": []}
    tenants.write_text(yaml.safe_dump(config, sort_keys=False))
    tenants.chmod(0o644)  # read by the image's user through the bind mount
    env = host_env | {
        "CONDUIT_REDIS_URL": empty_redis,
        "CONDUIT_DATABASE_URL": database,
        "CONDUIT_TENANTS_FILE": "/etc/conduit/tenants.yaml",
        "CONDUIT_PROXY_URL": f"http://127.0.0.1:{ports['proxy']}",
        "CONDUIT_PROXY_PORT": str(ports["proxy"]),
        "CONDUIT_IMPORTER_HTTP_PORT": str(ports["importer"]),
        "CONDUIT_SCHEDULER_HTTP_PORT": str(ports["scheduler"]),
        "CONDUIT_DEMO_PORT": str(ports["demo-api"]),
        "CONDUIT_DEMO_EXPORT_ROWS": "200",
        "CONDUIT_DEMO_EXPORT_CACHE_DIR": "/tmp/exports",
    }
    volumes = [f"{tenants}:/etc/conduit/tenants.yaml:ro"]
    containers: list[image.Container] = []
    run_id = secrets.token_hex(3)  # two runs on one machine (a helper's beside CI) must not share containers

    def container(name: str) -> image.Container:
        made = image.Container(built, f"conduit-image-test-{name}-{run_id}", volumes, env)
        containers.append(made)
        return made

    try:
        cli = container("cli")
        code, output = cli.execute("/opt/venv/bin/conduit", "migrate")
        assert code == 0, output

        services = {name: container(name) for name in ("demo-api", "proxy", "importer", "scheduler")}
        started = time.monotonic()
        for name, made in services.items():
            made.start("/opt/venv/bin/conduit", name, log=tmp_path / f"{name}.log")
        checks = {name: f"http://127.0.0.1:{port}/ready" for name, port in ports.items()}
        checks["demo-api"] = f"{demo_url}/health_check"
        ready_after = {}
        for name, url in checks.items():
            wait_until(lambda url=url: _status(url) == 200, 120, f"{name} ready")  # type: ignore[misc]
            ready_after[name] = time.monotonic() - started
        # Containers made beforehand; from `buildah run` of all four at once to each one seen ready.
        print("start to ready:", ", ".join(f"{name} {seconds:.1f} s" for name, seconds in ready_after.items()))

        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['proxy']}/resources/42", headers={"X-Tenant-ID": "acme"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read())

        code, output = cli.execute("/opt/venv/bin/conduit", "imports", "run", "acme", "invoices", "--date", EXPORT_DATE)
        assert code == 0, output
        runs = run_sync(_fetch(database, "SELECT status, rows_imported FROM import_runs WHERE module = 'invoices'"))
        assert [(run["status"], run["rows_imported"]) for run in runs] == [("succeeded", 200)]
        (count,) = run_sync(_fetch(database, "SELECT count(*) FROM invoices"))
        assert count[0] == 200
    finally:
        for made in containers:
            made.stop()
        logs = {path.name: path.read_text()[-4000:] for path in tmp_path.glob("*.log")}
        for made in containers:
            made.remove()
    # SIGTERM reached each service, which shut down on its own (not buildah's SIGKILL).
    for name in ("proxy", "importer", "scheduler"):
        stopped = f"{name} stopped"
        assert stopped in logs[f"{name}.log"], logs[f"{name}.log"]
        assert "exited on killed" not in logs[f"{name}.log"], logs[f"{name}.log"]
