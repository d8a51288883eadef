"""Liveness is about the process, readiness about its stores: with Redis down, the liveness probe
the Helm chart gives each process answers at once and passes, while /ready says 503.

The probes are taken from the rendered chart and run here as the kubelet would: an ``httpGet``
against the process's port, an ``exec`` command with the process's environment. The worker's
probe used to be ``arq --check``, which with Redis down takes about 31 s (arq's connection
retries) and fails: a healthy worker was restarted whenever Redis blinked.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from pydantic import SecretStr

from devtools.processes import free_port
from tests.e2e.processes import Service, Services, base_env, wait_ready
from tests.helpers import tenants_file
from tests.scheduler.fault_proxy import FaultProxy, fault_proxy
from tests.third_party import ThirdParty

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

# The chart's probe timeout is what matters (see values.yaml); 2 s is generous on a loaded machine
# for a local HTTP answer that takes milliseconds, and far from arq --check's 31 s.
LIVENESS_WITHIN = 2.0


@pytest.fixture
async def redis_proxy(redis_url: str, redis: object) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(redis_url) as proxy:
        yield proxy


def _chart_liveness_probes() -> dict[str, dict[str, Any]]:
    """Each Deployment's liveness probe, by container name, from `helm template` with default values."""
    chart = Path(__file__).resolve().parents[2] / "helm" / "conduit"
    helm = Path(sys.executable).with_name("helm")
    rendered = subprocess.run(
        [str(helm), "template", "conduit", str(chart)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    probes = {}
    for obj in yaml.safe_load_all(rendered):
        if obj and obj["kind"] == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                probes[container["name"]] = container["livenessProbe"]
    return probes


async def _run_probe(
    session: aiohttp.ClientSession, probe: dict[str, Any], service: Service, env: dict[str, str]
) -> tuple[bool, float]:
    """Whether the probe passed, and how long it took."""
    started = time.monotonic()
    if "httpGet" in probe:
        status, _ = await _timed_get(session, service.ops_url + probe["httpGet"]["path"])
        return 200 <= status < 400, time.monotonic() - started
    # An image path (/opt/venv/bin/arq) is this venv's.
    program, *args = probe["exec"]["command"]
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name(Path(program).name)), *args, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    code = await asyncio.wait_for(proc.wait(), 60)
    return code == 0, time.monotonic() - started


async def _timed_get(session: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    started = time.monotonic()
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
        await response.read()
        return response.status, time.monotonic() - started


async def _until_not_ready(session: aiohttp.ClientSession, service: Service, within: float = 20.0) -> int:
    deadline = time.monotonic() + within
    while True:
        assert service.proc.poll() is None, f"{service.name} exited with Redis down:\n{service.output()[-2000:]}"
        status, _ = await _timed_get(session, service.ops_url + "/ready")
        if status != 200 or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)  # polling a process we do not control


# The worker lives through the outage since main's b1e8f33 ("conduit worker lives through a Redis
# outage of any length"); before it, the worker exited as its connections dropped.
@pytest.mark.parametrize("name", ["scheduler", "importer"])
async def test_liveness_answers_at_once_while_redis_is_down(
    name: str, redis_proxy: FaultProxy, database_url: str, token_key: SecretStr, tmp_path: Path
) -> None:
    probe = _chart_liveness_probes()[name]
    party = ThirdParty(url="http://127.0.0.1:9")  # never called: no token is due in this test
    port = free_port()
    env = base_env(
        CONDUIT_REDIS_URL=redis_proxy.url,
        CONDUIT_REDIS_TIMEOUT="0.5",
        CONDUIT_DATABASE_URL=database_url,
        CONDUIT_TENANTS_FILE=str(tenants_file(tmp_path, party, ["acme"])),
        CONDUIT_TOKEN_KEY=token_key.get_secret_value(),
        **{f"CONDUIT_{name.upper()}_HTTP_PORT": str(port)},
    )
    services = Services(env, tmp_path)
    service = services.start(name, name, ops_port=port)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, service)
            redis_proxy.set("down")
            assert await _until_not_ready(session, service) == 503
            passed, took = await _run_probe(session, probe, service, env)
            assert service.proc.poll() is None, service.output()[-2000:]
    finally:
        # Back up before SIGTERM: how a process stops during an outage is not this test's subject.
        # Waited for in a thread: the fault proxy runs on this event loop and must keep forwarding.
        redis_proxy.set("up")
        await asyncio.to_thread(services.stop_all)
    assert passed, (probe, took)
    assert took < LIVENESS_WITHIN, (probe, took)
