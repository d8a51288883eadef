"""Container health check for the Conduit image: exit 0 when healthy, 1 when not.

The image has no shell and no curl, and one image runs every process, so the
Dockerfile's ``HEALTHCHECK`` runs this with no argument and it works out which
process is PID 1 from ``/proc/1/cmdline``.  Compose and scripts may pass a target:

    python /app/healthcheck.py http://127.0.0.1:8080/ready
    python /app/healthcheck.py tcp://127.0.0.1:8090

Standard library only, so it starts in milliseconds and needs nothing the image lacks.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

TIMEOUT = 3.0
# Subcommand -> (environment variable naming its port, default port, what to probe).
TARGETS: dict[str, tuple[str, int, str | None]] = {
    "proxy": ("CONDUIT_PROXY_PORT", 8080, "/ready"),
    "importer": ("CONDUIT_IMPORTER_HTTP_PORT", 8081, "/ready"),
    "scheduler": ("CONDUIT_SCHEDULER_HTTP_PORT", 8082, "/ready"),
    "demo-api": ("CONDUIT_DEMO_PORT", 8090, "/health_check"),
}
_OLD_NAMES = {"CONDUIT_IMPORTER_HTTP_PORT": "CONDUIT_WORKER_HTTP_PORT"}


def target_for(cmdline: list[str], environ: dict[str, str]) -> str | None:
    """The URL to probe for a process started as ``cmdline``; None when it serves nothing (migrate)."""
    command = next((arg for arg in cmdline if arg in TARGETS or arg in ("migrate", "worker")), None)
    # `worker` is the importer's deprecated name; `arq services.importer.worker.WorkerSettings` is the other
    # way to start one.
    if command == "worker" or (command is None and any(arg.endswith("WorkerSettings") for arg in cmdline)):
        command = "importer"
    if command == "migrate":
        return None
    port_variable, default_port, path = TARGETS[command or "proxy"]
    # As the importer does, read its port from the deprecated CONDUIT_WORKER_HTTP_PORT when only that is set.
    port = environ.get(port_variable) or environ.get(_OLD_NAMES.get(port_variable, ""), str(default_port))
    return f"http://127.0.0.1:{port}{path}" if path else f"tcp://127.0.0.1:{port}"


# Never send a loopback probe through an HTTP proxy set in the container's environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe(target: str) -> bool:
    parts = urlsplit(target)
    if parts.scheme == "tcp":
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=TIMEOUT):
                return True
        except OSError:
            return False
    try:
        with _DIRECT.open(target, timeout=TIMEOUT) as response:
            status: int = response.status
            return 200 <= status < 300
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        target: str | None = argv[1]
    else:
        cmdline = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
        target = target_for(cmdline, dict(os.environ))
    if target is None:
        return 0
    healthy = probe(target)
    if not healthy:
        print(f"unhealthy: {target}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
