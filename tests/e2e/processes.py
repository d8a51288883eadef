"""Start Conduit's processes the way a user does (`conduit proxy`, ...) and stop them with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

CONDUIT = str(Path(sys.executable).with_name("conduit"))


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    ops_url: str

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # A process that ignores SIGTERM fails its test; it must not outlive it.
            self.proc.kill()
            self.proc.wait()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_peak_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")


@dataclass
class Services:
    env: dict[str, str]
    workdir: Path
    running: list[Service] = field(default_factory=list)

    def start(self, name: str, *args: str, ops_port: int) -> Service:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as handle:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen([CONDUIT, *args], env=self.env, stdout=handle, stderr=subprocess.STDOUT)
        service = Service(name, proc, log, f"http://127.0.0.1:{ops_port}")
        self.running.append(service)
        return service

    def stop_all(self) -> dict[str, int]:
        """Every service stopped, even when one of them hangs (that one's TimeoutExpired is raised after)."""
        codes: dict[str, int] = {}
        hung: subprocess.TimeoutExpired | None = None
        for service in self.running:
            try:
                codes[service.name] = service.stop()
            except subprocess.TimeoutExpired as exc:
                hung = hung or exc
        if hung is not None:
            raise hung
        return codes


def base_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env.update(values)
    return env


async def wait_ready(
    session: aiohttp.ClientSession, service: Service, timeout: float = 30.0, status: int = 200
) -> None:
    """Poll /ready until it answers ``status`` (200: ready; 503: not); fail with the service's log if it dies
    or never gets there."""
    deadline = time.monotonic() + timeout
    while True:
        assert service.proc.poll() is None, f"{service.name} exited:\n{service.output()[-3000:]}"
        try:
            async with session.get(service.ops_url + "/ready") as response:
                if response.status == status:
                    return
        except aiohttp.ClientConnectionError:
            pass
        assert time.monotonic() < deadline, f"{service.name} /ready never {status}:\n{service.output()[-3000:]}"
        await _yield_briefly()


async def _yield_briefly() -> None:
    # Polling a process we do not control: a short pause between probes, not a stand-in for an event.
    import asyncio

    await asyncio.sleep(0.05)
