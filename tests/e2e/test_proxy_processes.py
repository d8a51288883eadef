"""`conduit proxy --processes 2`: two children serve, the parent only supervises and stays small; a child that
crashes while serving is replaced while its sibling answers on.

The parent holds none of the app (aiohttp, cryptography, the Redis client) and
there is no multiprocessing resource tracker beside it; the shared objects a
process has loaded are listed in /proc/PID/maps, which the test reads.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from devtools.processes import free_port
from tests.e2e.processes import Service, Services, base_env, wait_ready
from tests.helpers import tenants_file
from tests.third_party import ThirdParty

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

# Compiled extensions of the app's packages: loaded means imported.
APP_EXTENSIONS = ("/aiohttp/", "/cryptography/", "/hiredis/")


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def loaded(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in APP_EXTENSIONS if name in maps}


async def test_two_children_serve_and_the_parent_holds_none_of_the_app(
    proxy_process: Callable[..., tuple[Services, Service]],
) -> None:
    services, proxy = proxy_process("--processes", "2")
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, proxy)
            async with session.get(f"{proxy.ops_url}/x", headers={"X-Tenant-ID": "acme"}) as response:
                assert response.status == 200
            kids = children(proxy.proc.pid)
            assert len(kids) == 2, [Path(f"/proc/{k}/cmdline").read_bytes() for k in kids]
            assert loaded(proxy.proc.pid) == set()
            # It forks its children, which is only safe from a process of one thread.
            assert len(list(Path(f"/proc/{proxy.proc.pid}/task").iterdir())) == 1
            # The check can see them: a child that answered has them all.
            assert any(loaded(kid) == set(APP_EXTENSIONS) for kid in kids)
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(30) == 0
    finally:
        services.stop_all()
    assert proxy.output().count('"proxy stopped"') == 2


@pytest.mark.parametrize("options", [(), ("--processes", "2")])
def test_a_port_in_use_stops_the_proxy_with_a_clear_error(
    proxy_process: Callable[..., tuple[Services, Service]], options: tuple[str, ...]
) -> None:
    with socket.socket() as taken:  # without SO_REUSEPORT: the children cannot share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        services, proxy = proxy_process(*options, CONDUIT_PROXY_PORT=str(port))
        try:
            # It must exit by itself: a process that hangs here ignores SIGTERM too.
            assert proxy.proc.wait(20) == 1
        finally:
            services.stop_all()
    output = proxy.output()
    assert '"event":"cannot listen"' in output
    message = f"conduit proxy: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert message in output
    assert "Traceback" not in output
    if options:  # the parent names the child and its reason, stops the other, and restarts none
        lines = [orjson.loads(line) for line in output.splitlines() if '"proxy process' in line]
        assert lines and {(line["event"], line["reason"]) for line in lines} == {
            ("proxy process could not start", message)
        }
        assert len(lines) == 1 and '"proxy process exited"' not in output


# `conduit proxy`, whose children crash on `GET /crash`: stopping the event loop makes ``asyncio.run`` raise
# RuntimeError out of ``serve``, an uncaught exception after the child got ready, as any bug there would.
# Patched in the child (``serve`` runs there), so the parent stays free of the app as in production.
CRASHABLE = r"""
import sys
from services.auth_proxy import main as proxy_main

serve = proxy_main.serve

def crashable(*args, **kwargs):
    import asyncio
    from services.auth_proxy.app import ProxyApp

    handle = ProxyApp.handle

    async def crashing(self, request):
        if request.raw_path == "/crash":
            asyncio.get_running_loop().stop()
        await handle(self, request)

    ProxyApp.handle = crashing
    serve(*args, **kwargs)

proxy_main.serve = crashable
from conduit.cli import main
main()
"""


def listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1:port: one per child that serves (SO_REUSEPORT)."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == local and row.split()[3] == "0A")


async def until(done: Callable[[], bool], proxy: Service, what: str) -> None:
    for _ in range(3000):
        if done():
            return
        assert proxy.proc.poll() is None, f"exited before {what}:\n{proxy.output()[-3000:]}"
        await asyncio.sleep(0.01)  # polling /proc and the log: a pause between looks, not a stand-in for an event
    raise AssertionError(f"never {what}:\n{proxy.output()[-3000:]}")


async def test_a_child_that_crashes_while_serving_is_replaced_and_the_proxy_answers_on(
    party: ThirdParty, redis_url: str, redis: object, token_key: SecretStr, tmp_path: Path
) -> None:
    port = free_port()
    env = base_env(
        CONDUIT_REDIS_URL=redis_url,
        CONDUIT_TENANTS_FILE=str(tenants_file(tmp_path, party, ["acme"])),
        CONDUIT_TOKEN_KEY=token_key.get_secret_value(),
        CONDUIT_PROXY_HOST="127.0.0.1",
        CONDUIT_PROXY_PORT=str(port),
    )
    log = tmp_path / "proxy.log"
    with log.open("wb") as handle:
        command = [sys.executable, "-c", CRASHABLE, "proxy", "--processes", "2"]
        proc = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    proxy = Service("proxy", proc, log, f"http://127.0.0.1:{port}")
    services = Services(env, tmp_path, [proxy])
    try:
        # A connection each: none kept alive to the child that crashes, every one spread by SO_REUSEPORT anew.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

            async def answers() -> None:
                for _ in range(20):
                    async with session.get(f"{proxy.ops_url}/x", headers={"X-Tenant-ID": "acme"}) as response:
                        assert response.status == 200

            await until(lambda: listeners(port) == 2, proxy, "both children listened")
            kids = children(proc.pid)
            with suppress(aiohttp.ClientError):  # the child that takes it dies before it answers, or as it does
                async with session.get(f"{proxy.ops_url}/crash") as response:
                    await response.read()
            await until(lambda: '"proxy process exited"' in proxy.output(), proxy, "reaped the crashed child")
            await answers()  # its sibling alone, or with the replacement already
            await until(lambda: listeners(port) == 2, proxy, "replaced the crashed child")
            await answers()
            replaced = children(proc.pid)
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(30) == 0
    finally:
        services.stop_all()
    output = proxy.output()
    assert "RuntimeError: Event loop stopped before Future completed." in output  # the crash it was
    (exited,) = [orjson.loads(line) for line in output.splitlines() if '"proxy process exited"' in line]
    assert exited["pid"] in kids and exited["status"] == "exit code 1" and exited["restart_in"] == 0.1
    assert len(set(replaced) - set(kids)) == 1 and output.count('"proxy stopped"') == 2
