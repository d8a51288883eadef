"""A service asked to stop while it is still starting stops as cleanly as a running one: exit code 0, its
"stopped" line, no default action of SIGTERM (exit status -15 and nothing logged).

The moment is made exact: the tenants file is a named pipe, which the service reads while it starts. Once
the service has the pipe open (a writer can then open it), the test sends SIGTERM, then writes the file.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from pathlib import Path

import pytest
from pydantic import SecretStr

from devtools.processes import free_port
from tests.e2e.processes import Service, Services, base_env
from tests.helpers import tenants_file
from tests.third_party import ThirdParty

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PORT_SETTING = {"scheduler": "CONDUIT_SCHEDULER_HTTP_PORT", "console": "CONDUIT_CONSOLE_PORT"}


async def opened_by_reader(fifo: Path, service: Service) -> int:
    """A write end of ``fifo``, once ``service`` has opened it to read (before that, opening it fails)."""
    for _ in range(6000):
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert service.proc.poll() is None, service.output()[-3000:]
        await asyncio.sleep(0.01)  # polling a process we do not control
    raise AssertionError(f"{service.name} never opened the tenants file:\n{service.output()[-3000:]}")


@pytest.mark.parametrize("name", ["scheduler", "console"])
async def test_a_sigterm_while_it_reads_its_tenants_file_is_a_clean_stop(
    name: str, redis_url: str, server_urls: dict[str, str], token_key: SecretStr, tmp_path: Path
) -> None:
    party = ThirdParty(url="http://127.0.0.1:9")  # never called
    tenants = tenants_file(tmp_path, party, ["acme"]).read_bytes()
    fifo = tmp_path / "tenants.pipe"
    os.mkfifo(fifo)
    port = free_port()
    env = base_env(
        CONDUIT_REDIS_URL=redis_url,
        CONDUIT_DATABASE_URL=server_urls["CONDUIT_DATABASE_URL"],
        CONDUIT_TENANTS_FILE=str(fifo),
        CONDUIT_TOKEN_KEY=token_key.get_secret_value(),
        CONDUIT_CONSOLE_TOKEN="a-token-for-the-test",
        **{PORT_SETTING[name]: str(port)},
    )
    services = Services(env, tmp_path)
    service = services.start(name, name, ops_port=port)
    try:
        writer = await opened_by_reader(fifo, service)
        service.proc.send_signal(signal.SIGTERM)
        try:
            os.write(writer, tenants)  # fits the pipe's buffer: never blocks
        finally:
            os.close(writer)
        code = await asyncio.to_thread(service.proc.wait, 30)
    finally:
        services.stop_all()
    output = service.output()
    assert code == 0, output[-3000:]  # not -15: killed by the default action, nothing logged
    assert f'"event":"{name} stopped"' in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
