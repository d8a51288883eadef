"""A redis-server of one test's own, on a port it keeps, so the test can stop it and start it again.

The machine's shared Redis serves every other test and helper; outages are staged on this one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from devtools.probes import redis_reachable
from devtools.processes import free_port, wait_until
from devtools.server_binaries import find_redis


class PrivateRedis:
    """A child redis-server (not daemonized). ``durable``: every write reaches its append-only file before
    Redis answers, so a restart (even after SIGKILL) keeps the queue, as a production Redis holding jobs must."""

    def __init__(self, directory: Path, durable: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = directory
        self._durable = durable
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        """Start the server; with ``wait``, return once it answers PING (it may be loading its file)."""
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self._durable else ["--appendonly", "no"]
        args = [str(find_redis().path), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence]
        self._proc = subprocess.Popen([*args, "--dir", str(self._dir)], stdout=subprocess.DEVNULL)
        if wait:
            wait_until(lambda: redis_reachable(self.url, timeout=0.5), 10.0, f"redis-server on port {self.port}")

    def stop(self) -> None:
        """Kill the server at once: to its clients, Redis is simply gone."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
