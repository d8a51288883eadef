"""Small combinators for the pipeline's async streams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


async def whole_start(source: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """``source`` with its first piece at least ``size`` bytes long (or the whole of it, if shorter).

    For whatever looks at a stream's first bytes (a UTF-8 byte order mark): a download may be cut
    anywhere, and the member streamed while it arrives (zip_stream.py) comes in the pieces it arrived in.
    """
    start = b""
    async for piece in source:
        start += piece
        if len(start) >= size:
            break
    if start:
        yield start
    async for piece in source:
        yield piece


async def prefetch(source: AsyncIterator[T], depth: int) -> AsyncIterator[T]:
    """Run ``source`` ahead of its consumer by up to ``depth`` items.

    The COPY of one chunk waits on PostgreSQL; meanwhile the event loop parses
    the next one, so Python and PostgreSQL use both cores instead of taking turns.
    """
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=depth)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put(_Failure(exc))
            return
        await queue.put(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Failure:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc
