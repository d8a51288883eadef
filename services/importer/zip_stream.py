"""Stage 3 while the zip still arrives: its one member decompressed from the local header on, the bytes spooled.

A zip's directory is at its end, so the careful reader (zipfile, archive.py)
must wait for the whole download. A zip written in one go also says, in the
local header before the member's data, what the member is; reading from there
lets COPY start with the first megabyte instead of after the last one. The
directory still decides: every byte is written to the spool as it passes, and
before the CSV's last byte reaches COPY (so before anything commits) the spooled
zip is opened with zipfile and must agree with what was streamed (one member,
at offset 0, same name, method, sizes and CRC). Where it does not, or where
the local header cannot be streamed (encryption, another method, a stored
member of unknown size, a compression ratio past the limit), the stream gives
up with :class:`NotStreamed` and the run reads the spool with zipfile, as before:
every refusal is the careful reader's, in the order it gives them.

Hand-written on ``zlib.decompressobj`` (what zipfile itself uses) rather than
the ``stream-unzip`` package: that one pulls in pycryptodome and a pure-Python
inflater for AES and Deflate64, which an export never needs, runs its async form
in a thread per chunk, and its refusals would still have to be checked against
zipfile's. One local header, one decompressor and a CRC is all this needs.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, NoReturn

from services.importer.archive import DAMAGED, ZipLimits, open_archive, single_member, too_large, unzip
from services.importer.stats import Tally, Timings

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # signature, version, flags, method, time, date, crc, sizes, name, extra
_SIGNATURE = b"PK\x03\x04"
_UNSTREAMABLE_FLAGS = 0x1 | 0x20 | 0x40  # encrypted, patched data, strong encryption
_DESCRIPTOR = 0x8  # sizes and CRC follow the data instead of being in the header
_ZIP64 = 0xFFFFFFFF
_OUT = 1 << 20  # largest decompressed piece: a bomb never inflates more than this per step
# A header is a few hundred bytes; one that runs on past this is left to zipfile's read of the spool.
HEAD_LIMIT = 16 << 20


class NotStreamed(Exception):
    """The stream gave up (the download has been spooled whole): read the spool with zipfile instead."""


class _GiveUp(Exception):
    pass


@dataclass(frozen=True)
class _Local:
    flags: int
    method: int
    compressed: int | None  # None: not known before the data ends (a data descriptor follows)
    size: int | None


@dataclass
class _Seen:
    """What the stream read: the directory must agree with every field before a byte of it commits."""

    local: _Local
    compressed: int = 0
    size: int = 0
    crc: int = 0


class ZipStream:
    """One zip as it downloads: every byte into ``spool``, the member at offset 0 decompressed on the way."""

    def __init__(self, chunks: AsyncIterator[bytes], spool: IO[bytes], limits: ZipLimits, timings: Timings) -> None:
        self._chunks = chunks
        self._spool = spool
        self._limits = limits
        self._timings = timings
        self._received = 0
        self._ended = False
        self._buf = b""  # received, not yet parsed
        self._seen: _Seen | None = None
        self._member = self._member_data()
        self._member_done = False
        self._settled = False
        self._gave_up: str | None = None
        self._failed: Exception | None = None

    @property
    def settled(self) -> bool:
        return self._settled

    async def next_chunk(self) -> bytes | None:
        """The member's next decompressed piece; None when it ends (and the directory agreed with it)."""
        piece = await self._advance()
        if piece is None:
            await self.settle()
        return piece

    async def settle(self) -> None:
        """Read the rest of the member and of the download, then check the spooled zip's directory.

        Raises the download's own errors, zipfile's refusals (archive.py), or :class:`NotStreamed`.
        """
        if self._settled:
            return
        while await self._advance() is not None:
            pass
        await self._drain()
        with self._timings.timed("verify"):
            why = self._disagreement()
        if why:
            await self._give_up(why)
        self._settled = True

    async def aclose(self) -> None:
        await self._member.aclose()  # type: ignore[attr-defined]

    async def _advance(self) -> bytes | None:
        """The member's next piece; None at its end."""
        if self._gave_up is not None:
            raise NotStreamed(self._gave_up)
        if self._member_done:
            return None
        try:
            return await anext(self._member)
        except StopAsyncIteration:
            self._member_done = True
            return None
        except _GiveUp as exc:
            await self._give_up(str(exc))

    async def give_up(self, why: str) -> NoReturn:
        """Stop streaming: the rest of the download is spooled, then :class:`NotStreamed`."""
        await self._give_up(why)

    async def _give_up(self, why: str) -> NoReturn:
        self._gave_up = why
        await self._drain()
        raise NotStreamed(why)

    # --- the download, spooled as it passes --------------------------------------------------------------

    async def _pull(self) -> bytes:
        """The next downloaded piece, already in the spool; b"" at the end."""
        if self._failed is not None:
            raise self._failed  # a later settle() gives the download's error again, not a half zip's
        if self._ended:
            return b""
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._ended = True
            return b""
        except Exception as exc:
            self._failed = exc
            raise
        with self._timings.timed("spool"):
            self._received += len(chunk)
            if self._received > self._limits.max_zip_bytes:
                raise too_large(self._limits)
            self._spool.write(chunk)
        return chunk

    async def _drain(self) -> None:
        while await self._pull():
            pass

    async def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = await self._pull()
            if not chunk:
                return False
            self._buf += chunk
        return True

    # --- the member ------------------------------------------------------------------------------------

    async def _member_data(self) -> AsyncIterator[bytes]:
        local = await self._local_header()
        seen = self._seen = _Seen(local)
        if local.method == zipfile.ZIP_STORED:
            pieces = self._stored(seen)
        else:
            pieces = self._inflated(seen)
        async for piece in pieces:
            seen.crc = zlib.crc32(piece, seen.crc)
            seen.size += len(piece)
            if seen.size > self._ceiling(seen.compressed):
                raise _GiveUp("the member decompresses past the size or ratio limit")
            yield piece

    async def _local_header(self) -> _Local:
        if not await self._fill(_LOCAL.size) or not self._buf.startswith(_SIGNATURE):
            raise _GiveUp("the zip does not start with a local file header")
        _, _, flags, method, _, _, _, compressed, size, name_len, extra_len = _LOCAL.unpack_from(self._buf)
        start = _LOCAL.size + name_len + extra_len
        if not await self._fill(start):
            raise _GiveUp("the download ends inside the local file header")
        extra = self._buf[_LOCAL.size + name_len : start]
        self._buf = self._buf[start:]
        if flags & _UNSTREAMABLE_FLAGS or method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _GiveUp(f"the member cannot be streamed (flags {flags:#x}, method {method})")
        local = _Local(flags, method, *_sizes(flags, compressed, size, extra))
        if local.method == zipfile.ZIP_STORED and local.compressed is None:
            raise _GiveUp("a stored member whose size follows its data")
        if local.size is not None and local.compressed is not None and local.size > self._ceiling(local.compressed):
            raise _GiveUp("the local header's sizes are past the size or ratio limit")
        return local

    def _ceiling(self, compressed: int) -> int:
        """As unzip's, but over the compressed bytes read so far: no header the directory has not confirmed yet
        can make the stream inflate more than the limits allow for what has arrived."""
        return min(self._limits.max_csv_bytes, int(self._limits.max_ratio * max(compressed, 1)))

    async def _stored(self, seen: _Seen) -> AsyncIterator[bytes]:
        left = seen.local.compressed or 0
        while left:
            if not self._buf and not await self._fill(1):
                raise _GiveUp("the download ends inside the member")
            piece, self._buf = self._buf[:left], self._buf[left:]
            left -= len(piece)
            seen.compressed += len(piece)
            yield piece

    async def _inflated(self, seen: _Seen) -> AsyncIterator[bytes]:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as zipfile reads it
        data, self._buf = self._buf, b""
        while not inflater.eof:
            if not data:
                data = await self._pull()
                if not data:
                    raise _GiveUp("the download ends inside the member")
            with self._timings.timed("unzip"):
                try:
                    piece = inflater.decompress(data, _OUT)
                except zlib.error as exc:
                    raise _GiveUp(f"the member does not inflate ({exc})") from None
            # At the end, what follows the data is in unused_data (and may be in unconsumed_tail too).
            left = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            seen.compressed += len(data) - len(left)
            data = inflater.unconsumed_tail
            if piece:
                yield piece
        self._buf = inflater.unused_data

    # --- the directory's word -----------------------------------------------------------------------------

    def _disagreement(self) -> str | None:
        """Why the spooled zip's directory disagrees with what was streamed; zipfile's own refusals raise."""
        archive = open_archive(self._spool)
        with archive:
            info = single_member(archive, self._limits)
            seen = self._seen
            assert seen is not None  # the member ended, so its header was read
            streamed = (0, seen.local.method, seen.compressed, seen.size, seen.crc)
            listed = (info.header_offset, info.compress_type, info.compress_size, info.file_size, info.CRC)
            if streamed != listed:
                return f"the zip's directory says {listed}, its local header and data {streamed}"
            try:
                archive.open(info).close()  # zipfile's own checks of the local header (its name, flags)
            except (*DAMAGED, RuntimeError) as exc:
                return f"zipfile does not open the member ({type(exc).__name__})"
        return None


def _sizes(flags: int, compressed: int, size: int, extra: bytes) -> tuple[int | None, int | None]:
    """The sizes in a local header: from its zip64 extra field where they are 0xFFFFFFFF, unknown with a data
    descriptor (the data's end is then deflate's own)."""
    if compressed == _ZIP64 or size == _ZIP64:
        values = _zip64(extra, size == _ZIP64, compressed == _ZIP64)
        size = values.pop(0) if size == _ZIP64 else size
        compressed = values.pop(0) if compressed == _ZIP64 else compressed
    if flags & _DESCRIPTOR and compressed == 0:
        return None, None
    return compressed, size


def _zip64(extra: bytes, size: bool, compressed: bool) -> list[int]:
    """The 8-byte values of the zip64 extra field (uncompressed size first), as many as are asked for."""
    wanted = int(size) + int(compressed)
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        body = extra[at + 4 : at + 4 + length]
        if kind == 1 and len(body) >= 8 * wanted:
            return list(struct.unpack_from(f"<{wanted}Q", body))
        at += 4 + length
    raise _GiveUp("a zip64 local header without its sizes")


class NeedMore(Exception):
    """The header's parse reached the end of what has arrived: :meth:`Streamed.more`, then parse again."""


class Streamed:
    """The CSV of a zip still arriving: the header is parsed from what has arrived, COPY takes the stream on
    from the start, and any later read (the careful path's) is zipfile's read of the spool.

    The header's parser (aiocsv) is never left waiting on the network: its C parser does not pass an exception
    thrown into it (a read timeout) on to the generators it awaits, which then stay "running" and cannot be
    closed. So the bytes it parses are in memory, and it asks for more by raising :class:`NeedMore`.
    """

    def __init__(self, stream: ZipStream, spool: IO[bytes], limits: ZipLimits, timings: Timings) -> None:
        self._stream = stream
        self._spool = spool
        self._limits = limits
        self._timings = timings
        self._head: list[bytes] = []  # what has arrived of the CSV before COPY starts
        self._head_bytes = 0
        self._ended = False
        self._reads = 0

    async def more(self) -> None:
        """Take the stream's next pieces into the head (raising the download's errors, outside any parser).

        Each parse of the head starts again from its first byte, so the head at least doubles between two:
        a first record that arrives in a thousand pieces is parsed a dozen times, not a thousand. Past
        ``HEAD_LIMIT`` the stream gives up (:class:`NotStreamed`) and zipfile's read of the spool decides.
        """
        if self._head_bytes > HEAD_LIMIT:
            await self._stream.give_up(f"the CSV's first record is longer than {HEAD_LIMIT} bytes")
        wanted = 2 * self._head_bytes
        while True:
            piece = await self._stream.next_chunk()
            if piece is None:
                self._ended = True
                return
            self._head.append(piece)
            self._head_bytes += len(piece)
            if self._head_bytes >= wanted:
                return

    async def head(self, size: Tally) -> AsyncIterator[bytes]:
        """What has arrived of the CSV; then its end, or :class:`NeedMore`."""
        for piece in self._head:
            size.n += len(piece)
            yield piece
        if not self._ended:
            raise NeedMore

    def read(self, size: Tally) -> AsyncIterator[bytes]:
        """The CSV's bytes: the first read (COPY's) from the stream, unless it was settled; later ones zipfile's."""
        self._reads += 1
        if self._reads == 1 and not self._stream.settled:
            return self._live(size)
        return self._spooled(size)

    async def settle(self) -> None:
        await self._stream.settle()

    async def _live(self, size: Tally) -> AsyncIterator[bytes]:
        head, self._head = self._head, []
        for kept in head:
            size.n += len(kept)
            yield kept
        while (piece := await self._stream.next_chunk()) is not None:
            size.n += len(piece)
            yield piece

    async def _spooled(self, size: Tally) -> AsyncIterator[bytes]:
        await self._stream.settle()
        async for piece in unzip(self._spool, self._limits, self._timings, size):
            yield piece
