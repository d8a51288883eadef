"""Builders for importer tests: export bodies (CSV → zip → base64 → JSON) and a fake export server.

The fake stands where the auth proxy would (``GET /exports/{module}?date=``, the
tenant in ``X-Tenant-ID``), records every call and can be told to answer with
any body or status, slowly, or to stop half way until the test lets it go on.
"""

from __future__ import annotations

import asyncio
import base64
import io
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from services.importer.archive import ZipLimits
from services.importer.stats import Timings
from services.importer.zip_stream import Streamed, ZipStream
from tests.third_party import serve


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in members.items():
            if name.endswith("/"):
                archive.writestr(zipfile.ZipInfo(name), b"")
            else:
                archive.writestr(name, data)
    return out.getvalue()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    """``data`` as a download delivers it: in pieces of ``size`` bytes."""
    for at in range(0, len(data), size):
        yield data[at : at + size]


def streamed(data: bytes, piece: int, limits: ZipLimits, timings: Timings) -> Streamed:
    """The zip ``data`` as the pipeline reads it while it arrives in pieces (zip_stream.py), spooled to memory."""
    spool = io.BytesIO()
    return Streamed(ZipStream(pieces(data, piece), spool, limits, timings), spool, limits, timings)


def envelope(module: str, payload: bytes, **extra: object) -> bytes:
    """The third party's answer: ``{"module_name": ..., "data": base64(payload)}``."""
    return orjson.dumps({"module_name": module, "data": base64.b64encode(payload).decode(), **extra})


def export_body(module: str, csv_text: str | bytes, encoding: str = "utf-8", name: str | None = None) -> bytes:
    data = csv_text.encode(encoding) if isinstance(csv_text, str) else csv_text
    return envelope(module, zip_bytes({name or f"{module}.csv": data}))


@dataclass
class Answer:
    """What the fake answers for one module: a body (status 200 unless told), optionally paused half way."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # Send this many bytes, then wait for `resume` (set by the test) before sending the rest.
    pause_after: int | None = None
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    paused: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Call:
    tenant: str | None
    module: str
    date: str | None


@dataclass
class Exports:
    """The fake export server; ``answers[(tenant, module)]`` or ``answers[module]`` decide the reply."""

    answers: dict[object, Answer | list[Answer]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    url: str = ""

    def set(self, module: str, body: bytes, tenant: str | None = None, **kwargs: object) -> Answer:
        answer = Answer(body, **kwargs)  # type: ignore[arg-type]
        self.answers[(tenant, module) if tenant else module] = answer
        return answer

    def sequence(self, module: str, answers: list[Answer]) -> None:
        """Answer the calls for ``module`` with these in turn (the last one repeats)."""
        self.answers[module] = answers

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/exports/{module}", self._export)
        return app

    def _pick(self, tenant: str | None, module: str) -> Answer | None:
        found = self.answers.get((tenant, module), self.answers.get(module))
        if isinstance(found, list):
            return found.pop(0) if len(found) > 1 else found[0]
        return found

    async def _export(self, request: web.Request) -> web.StreamResponse:
        module = request.match_info["module"]
        tenant = request.headers.get("X-Tenant-ID")
        self.calls.append(Call(tenant, module, request.query.get("date")))
        answer = self._pick(tenant, module)
        if answer is None:
            return web.json_response({"error": "not_found", "message": f"no export for {module}"}, status=404)
        if answer.status != 200:
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        response = web.StreamResponse(headers={"Content-Type": "application/json", **answer.headers})
        response.content_length = len(answer.body)
        await response.prepare(request)
        cut = len(answer.body) if answer.pause_after is None else answer.pause_after
        await response.write(answer.body[:cut])
        if answer.pause_after is not None:
            answer.paused.set()
            await answer.resume.wait()
            await response.write(answer.body[cut:])
        await response.write_eof()
        return response


@asynccontextmanager
async def running_exports() -> AsyncIterator[Exports]:
    exports = Exports()
    async with serve(exports.app()) as url:
        exports.url = url
        yield exports
