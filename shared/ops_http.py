"""The operations endpoints every service has: /health_check, /ready and /metrics.

/health_check is liveness only (the process answers) and is never logged;
/ready runs the service's own checks and answers 503 naming what failed.
``ops_answer`` builds the answers; ``add_ops_routes`` serves them from an
aiohttp app (importers, the scheduler), the proxy serves them from its own server.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared.config_errors import ListenError

if TYPE_CHECKING:
    from aiohttp import web

ReadyCheck = Callable[[], Awaitable[dict[str, str]]]
"""Returns a map of check name to "ok" or the reason it failed."""

OPS_PATHS = frozenset({"/health_check", "/ready", "/metrics"})


async def ops_answer(path: str, ready: ReadyCheck) -> tuple[int, str, bytes]:
    """Status, content type and body of one of ``OPS_PATHS``."""
    if path == "/health_check":
        return 200, "text/plain; charset=utf-8", b"ok"
    if path == "/ready":
        checks = await ready()
        ok = all(v == "ok" for v in checks.values())
        return 200 if ok else 503, "application/json", orjson.dumps({"ready": ok, "checks": checks})
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
    raise ValueError(f"not an operations path: {path!r}")


def add_ops_routes(app: web.Application, ready: ReadyCheck) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        status, content_type, body = await ops_answer(request.path, ready)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    for path in sorted(OPS_PATHS):
        app.router.add_get(path, handler)


async def start_ops_server(host: str, port: int, ready: ReadyCheck) -> web.AppRunner:
    """A small server for processes whose main job is not HTTP (importers, the scheduler)."""
    from aiohttp import web

    app = web.Application()
    add_ops_routes(app, ready)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(f"cannot listen on {host}:{port} for /health_check, /ready and /metrics: {reason}") from None
    return runner
