"""A TCP proxy in front of the real Redis that a test can cut, or tell to swallow Redis's replies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal
from urllib.parse import urlsplit

Mode = Literal["up", "down", "swallow_replies"]


class FaultProxy:
    """``up`` forwards both ways; ``down`` refuses clients; ``swallow_replies`` lets commands reach
    Redis but never returns the answers (a connection lost after Redis did the work)."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._db = parts.path or "/0"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.mode: Mode = "up"

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self._db}"

    def set(self, mode: Mode) -> None:
        """Switch mode; going down drops every open connection, as a real outage would."""
        self.mode = mode
        if mode == "down":
            for writer in list(self._writers):
                writer.close()
            self._writers.clear()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)

    async def stop(self) -> None:
        self.set("down")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "down":
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer, replies=False), self._pipe(up_reader, writer, replies=True))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if replies and self.mode == "swallow_replies":
                    continue
                writer.write(data)
                await writer.drain()
        writer.close()


@asynccontextmanager
async def fault_proxy(upstream_url: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(upstream_url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
