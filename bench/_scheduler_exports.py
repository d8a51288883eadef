"""Small exports for `python -m bench scheduler --job import`, served where the importer expects the auth proxy.

Every module's export is a few rows valid for its definition (CSV -> zip ->
base64 -> JSON envelope), built once and served for any tenant and date. The
auth proxy is left out on purpose: it has its own bench, and this one is about
the queue, the workers and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import threading
import zipfile
from collections.abc import Callable

import orjson
from aiohttp import web

from shared.modules import Column, ModuleDef

_VALUES: dict[str, Callable[[int], str]] = {
    "text": lambda i: f"value {i}",
    "integer": str,
    "bigint": lambda i: str(1_000_000 + i),
    "numeric": lambda i: f"{i}.25",
    "boolean": lambda i: "true" if i % 2 else "false",
    "date": lambda i: f"2026-01-{i % 28 + 1:02d}",
    "timestamptz": lambda i: f"2026-01-{i % 28 + 1:02d}T12:00:00Z",
    "jsonb": lambda i: orjson.dumps({"n": i}).decode(),
}


def export_body(module: ModuleDef, rows: int) -> bytes:
    """The provider's answer for ``module``: ``rows`` distinct rows (keys 0..rows-1)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([c.csv_header for c in module.columns])
    for i in range(rows):
        writer.writerow([_value(c, i) for c in module.columns])
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{module.name}.csv", out.getvalue().encode(module.encoding))
    payload = base64.b64encode(archive.getvalue()).decode()
    return orjson.dumps({"module_name": module.name, "data": payload})


def _value(column: Column, i: int) -> str:
    return _VALUES[column.type](i)


class ExportsServer:
    """``GET /exports/{module}?date=`` on 127.0.0.1, in a thread of its own with its own event loop."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies
        self.port = 0
        self.served = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/exports/{module}", self._export)
        return app

    async def _export(self, request: web.Request) -> web.Response:
        body = self.bodies.get(request.match_info["module"])
        if body is None:
            return web.json_response({"error": "not_found"}, status=404)
        self.served += 1
        return web.Response(body=body, content_type="application/json")
