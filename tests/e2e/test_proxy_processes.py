"""`conduit proxy --processes 2`: two children serve, the parent only supervises and stays small.

The parent holds none of the app (aiohttp, cryptography, the Redis client) and
there is no multiprocessing resource tracker beside it; the shared objects a
process has loaded are listed in /proc/PID/maps, which the test reads.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.processes import Service, Services, wait_ready

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


def test_a_port_in_use_stops_the_proxy_with_a_clear_error(
    proxy_process: Callable[..., tuple[Services, Service]],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        services, proxy = proxy_process(CONDUIT_PROXY_PORT=str(port))
        try:
            # It must exit by itself: a process that hangs here ignores SIGTERM too.
            assert proxy.proc.wait(20) == 1
        finally:
            services.stop_all()
    output = proxy.output()
    assert '"event":"cannot listen"' in output
    assert f"conduit proxy: cannot listen on 127.0.0.1:{port}: Address already in use" in output
    assert "Traceback" not in output
