"""The careful path's check on its parser: the file's records counted by the definition, and a quote never closed.

aiocsv (like Python's csv module) reads a quoted field that is never closed to
the end of the file without a word, so the rest of the file would become one
value. Counting quote characters cannot tell that from an inch mark (``5" screen``
holds one quote), so the bytes are read once more by the definition, as the fast
path's feed reads them (:class:`CopyFeed` for the careful path: any line ends, NULs
allowed), at C speed but around the few spots that need reading record by record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.importer.csv_requote import CopyFeed
from services.importer.csv_scan import NeverClosed, Untrusted


class RecordCount:
    """Pass the file's bytes through it; then ``records`` (header included) and ``never_closed``.

    Where the reading gives up (a record longer than 64 MiB), ``records`` is None: the parser's own line
    check is then the only one.
    """

    def __init__(self) -> None:
        self._feed: CopyFeed | None = CopyFeed(for_copy=False)
        self.records: int | None = None
        self.never_closed: str | None = None  # why, when the file ends inside a quoted field

    async def through(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if self._feed is not None:
                try:
                    self._feed.feed(chunk)
                except Untrusted:
                    self._feed = None
            yield chunk
        if self._feed is not None:
            try:
                self._feed.finish()
                self.records = self._feed.records
            except NeverClosed as exc:
                self.never_closed = str(exc)
            except Untrusted:
                pass
