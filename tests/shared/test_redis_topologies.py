"""Redis beyond one plain node: Redis Sentinel and rediss:// with a CA file, for every kind of process.

Real servers of this module's own on 127.0.0.1 (redis-server; Sentinel is the same binary with --sentinel):
a master, a replica and one Sentinel watching them, and a TLS-only redis-server whose certificate a
throwaway CA signed. The clients are built exactly as each process builds them: the proxy and the token CLI
through create_redis, the scheduler through its connect(), the workers through the arq RedisSettings that
WorkerSettings uses, and the CLI as a subprocess with only the environment.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from arq.connections import ArqRedis
from arq.worker import Worker
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from devtools.pki import make_pki
from devtools.processes import free_port, wait_until
from devtools.server_binaries import find_redis
from services.scheduler.main import connect as scheduler_connect
from services.scheduler.settings import SchedulerSettings
from shared.job_json import CODEC, create_pool
from shared.redis_client import create_redis
from shared.redis_connect import arq_settings
from shared.settings import CommonSettings

MASTER = "conduit-test"
# Sentinel mode: the URL's host and port are never used (nothing listens on port 1), only its database.
SENTINEL_URL = "redis://127.0.0.1:1/3"
CONDUIT = str(Path(sys.executable).with_name("conduit"))


def _start(args: list[str], directory: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(find_redis().path), *args], cwd=directory, stdout=subprocess.DEVNULL)


def _ping(port: int, **tls: Any) -> bool:
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5, **tls)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@dataclass
class SentinelSetup:
    master_port: int
    replica_port: int
    sentinel_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def settings(self) -> dict[str, str]:
        return {
            "redis_url": SENTINEL_URL,
            "redis_sentinels": f"127.0.0.1:{self.sentinel_port}",
            "redis_sentinel_master": MASTER,
        }

    def master_flags(self) -> str:
        sentinel = redis.Redis(port=self.sentinel_port, socket_timeout=1, decode_responses=True)
        try:
            return str(sentinel.sentinel_master(MASTER)["flags"])
        except redis.RedisError:
            return "unknown"
        finally:
            sentinel.close()

    def master_now(self) -> int:
        sentinel = redis.Redis(port=self.sentinel_port, socket_timeout=1, decode_responses=True)
        try:
            _host, port = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
            return int(port)
        finally:
            sentinel.close()


@pytest.fixture(scope="module")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    directory = tmp_path_factory.mktemp("sentinel")
    setup = SentinelSetup(free_port(), free_port(), free_port())
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    setup.procs["master"] = _start(["--port", str(setup.master_port), *common], directory)
    replica = ["--port", str(setup.replica_port), "--replicaof", "127.0.0.1", str(setup.master_port), *common]
    setup.procs["replica"] = _start(replica, directory)
    config = directory / "sentinel.conf"  # Sentinel rewrites its file, so it must be one of its own
    config.write_text(
        f"port {setup.sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {setup.master_port} 1\n"
        # Known from the start: discovering it from the master's INFO takes up to 10 s.
        f"sentinel known-replica {MASTER} 127.0.0.1 {setup.replica_port}\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 10000\n"
    )
    setup.procs["sentinel"] = _start([str(config), "--sentinel"], directory)
    try:
        for port in (setup.master_port, setup.replica_port, setup.sentinel_port):
            wait_until(lambda port=port: _ping(port), 10, f"redis on {port}")  # type: ignore[misc]
        wait_until(lambda: _replica_known(setup), 20, "the Sentinel seeing the replica")
        yield setup
    finally:
        for proc in setup.procs.values():
            proc.kill()
            proc.wait()


def _replica_known(setup: SentinelSetup) -> bool:
    sentinel = redis.Redis(port=setup.sentinel_port, socket_timeout=1, decode_responses=True)
    try:
        replicas = sentinel.execute_command("SENTINEL", "REPLICAS", MASTER)
        return any("flags" in str(replica) and "s_down" not in str(replica) for replica in replicas)
    except redis.RedisError:
        return False
    finally:
        sentinel.close()


def _direct(port: int) -> redis.Redis:
    return redis.Redis(port=port, db=3, socket_timeout=2, decode_responses=True)


async def _close_arq(pool: ArqRedis) -> None:
    """arq's own Sentinel client leaves its connections to the Sentinels open; a process has one, a test many."""
    await pool.aclose()
    for sentinel in getattr(pool.connection_pool, "sentinel_manager", None).sentinels if pool.connection_pool else []:
        await sentinel.aclose()


async def _noop(ctx: dict[str, Any], value: str) -> str:
    return f"done {value}"


async def test_every_kind_of_process_finds_the_master_through_sentinel(sentinel_setup: SentinelSetup) -> None:
    settings = CommonSettings(**sentinel_setup.settings())  # type: ignore[arg-type]
    master = _direct(sentinel_setup.master_now())

    # The proxy and `conduit tokens`: create_redis.
    proxy = create_redis(settings.redis_url, settings.redis_timeout, settings.redis_location())
    try:
        await proxy.set("conduit:topology", "through-sentinel")
    finally:
        await proxy.aclose()
    assert master.get("conduit:topology") == "through-sentinel"

    # The scheduler: its own connect(), an arq client.
    scheduler = scheduler_connect(SchedulerSettings(**sentinel_setup.settings()))  # type: ignore[arg-type]
    try:
        job = await scheduler.enqueue_job("_noop", "sentinel", _job_id="topology-job")
        assert job is not None
    finally:
        await scheduler.aclose()

    # The workers: arq connects itself from RedisSettings, as WorkerSettings.redis_settings.
    redis_settings = arq_settings(settings.redis_url, settings.redis_location())
    assert redis_settings.sentinel and redis_settings.database == 3
    worker = Worker(
        functions=[_noop],
        redis_settings=redis_settings,
        burst=True,
        poll_delay=0,
        max_jobs=1,
        handle_signals=False,
        **CODEC,
    )
    try:
        await worker.main()
    finally:
        await _close_arq(worker.pool)  # Worker.close() calls redis-py's deprecated close()
    assert worker.jobs_complete == 1
    arq = await create_pool(redis_settings)
    try:
        result = await arq.all_job_results()
    finally:
        await _close_arq(arq)
    assert [r.result for r in result] == ["done sentinel"]
    master.flushdb()
    master.close()


def test_the_cli_reaches_redis_through_sentinel_from_the_environment(sentinel_setup: SentinelSetup) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONDUIT_")}
    env |= {f"CONDUIT_{key.upper()}": value for key, value in sentinel_setup.settings().items()}
    done = subprocess.run([CONDUIT, "queue", "status"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(60)
async def test_a_client_follows_the_master_when_the_master_dies(sentinel_setup: SentinelSetup) -> None:
    """Last of the Sentinel tests: it kills the master for good."""
    settings = CommonSettings(**sentinel_setup.settings())  # type: ignore[arg-type]
    client = create_redis(settings.redis_url, settings.redis_timeout, settings.redis_location())
    before = sentinel_setup.master_now()
    try:
        await client.set("conduit:failover", "before")
        wait_until(lambda: _direct(sentinel_setup.replica_port).get("conduit:failover") == "before", 10, "replication")
        sentinel_setup.procs["master"].kill()
        wait_until(lambda: sentinel_setup.master_now() != before, 30, "the Sentinel promoting the replica")
        after = sentinel_setup.master_now()
        assert after == sentinel_setup.replica_port
        # Clients refuse a master the Sentinel still flags (redis-py checks the flags, as it should).
        wait_until(lambda: sentinel_setup.master_flags() == "master", 30, "the Sentinel seeing the new master up")

        async def written() -> bool:
            try:
                await client.set("conduit:failover", "after")
            except (RedisConnectionError, OSError):
                return False  # the connection to the dead master fails once; the next asks the Sentinel
            return True

        attempts = 1
        while not await written() and attempts < 5:
            attempts += 1
        new_master = _direct(after)
        assert new_master.get("conduit:failover") == "after"
        assert new_master.info("replication")["role"] == "master"
        new_master.close()
    finally:
        await client.aclose()


# --- rediss:// with a CA file --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    pki = make_pki(directory)
    port = free_port()
    tls = ["--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key), "--tls-ca-cert-file", str(pki.ca)]
    args = ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-auth-clients", "no", *tls]
    proc = _start([*args, "--save", "", "--appendonly", "no"], directory)
    try:
        tls_ping = {"ssl": True, "ssl_ca_certs": str(pki.ca)}
        wait_until(lambda: _ping(port, **tls_ping) or proc.poll() is not None, 10, f"TLS redis on {port}")
        if proc.poll() is not None:
            pytest.fail(f"redis-server with --tls-port exited {proc.returncode} (built without TLS?)")
        yield f"rediss://127.0.0.1:{port}/0", pki.ca
    finally:
        proc.kill()
        proc.wait()


async def test_rediss_is_verified_against_the_ca_file_for_every_kind_of_client(tls_redis: tuple[str, Path]) -> None:
    url, ca = tls_redis
    settings = CommonSettings(redis_url=url, redis_ca_file=ca)
    client: Redis = create_redis(settings.redis_url, settings.redis_timeout, settings.redis_location())
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    scheduler = scheduler_connect(SchedulerSettings(redis_url=url, redis_ca_file=ca))
    try:
        assert await scheduler.ping()
    finally:
        await scheduler.aclose()
    arq = await create_pool(arq_settings(settings.redis_url, settings.redis_location()))
    try:
        assert await arq.ping()
    finally:
        await arq.aclose()


async def test_without_the_ca_file_the_certificate_is_refused(tls_redis: tuple[str, Path]) -> None:
    url, _ca = tls_redis
    settings = CommonSettings(redis_url=url)
    client = create_redis(settings.redis_url, settings.redis_timeout, settings.redis_location())
    try:
        with pytest.raises(RedisConnectionError) as refused:
            await client.ping()
    finally:
        await client.aclose()
    assert (
        isinstance(refused.value.__cause__ or refused.value.__context__, ssl.SSLError)
        or "certificate" in str(refused.value).lower()
    )


def test_the_cli_reads_the_ca_file_from_the_environment(tls_redis: tuple[str, Path]) -> None:
    url, ca = tls_redis
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONDUIT_")}
    env |= {"CONDUIT_REDIS_URL": url, "CONDUIT_REDIS_CA_FILE": str(ca)}
    done = subprocess.run([CONDUIT, "queue", "status"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    without = {key: value for key, value in env.items() if key != "CONDUIT_REDIS_CA_FILE"}
    refused = subprocess.run([CONDUIT, "queue", "status"], env=without, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0
