"""The operations endpoints every service has: /health_check, /ready and /metrics.

/health_check is liveness only (the process answers) and is never logged;
/ready runs the service's own checks and answers 503 naming what failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

ReadyCheck = Callable[[], Awaitable[dict[str, str]]]
"""Returns a map of check name to "ok" or the reason it failed."""


def add_ops_routes(app: web.Application, ready: ReadyCheck) -> None:
    async def health_check(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def ready_handler(_: web.Request) -> web.Response:
        checks = await ready()
        ok = all(v == "ok" for v in checks.values())
        body = orjson.dumps({"ready": ok, "checks": checks})
        return web.Response(status=200 if ok else 503, body=body, content_type="application/json")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/health_check", health_check)
    app.router.add_get("/ready", ready_handler)
    app.router.add_get("/metrics", metrics)


async def start_ops_server(host: str, port: int, ready: ReadyCheck) -> web.AppRunner:
    """A small server for processes whose main job is not HTTP (workers, the scheduler)."""
    app = web.Application()
    add_ops_routes(app, ready)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
