"""Stage 3, unzip: the spooled zip (its directory is at the end, so it must be seekable), read by zipfile.

The fast path streams the member while the zip arrives (zip_stream.py) and
holds it to what this reader says; a zip it cannot stream is read here.

Nothing is ever extracted to disk: the member is decompressed straight into
the next stage, so a member named ``../../etc/passwd`` cannot write anywhere;
it is refused all the same, as are several members, directories, encryption,
and zip bombs (limits on the CSV's size and on its compression ratio, checked
against the zip's directory before reading and against the bytes while reading).
"""

from __future__ import annotations

import lzma
import re
import struct
import zipfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from services.importer.errors import BadExport
from services.importer.stats import Tally, Timings

_READ = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
# What zipfile and its decompressors raise on damaged bytes. bz2 raises a bare OSError ("Invalid data
# stream") that the job would otherwise take for PostgreSQL being unreachable and retry for ever; a
# real I/O error on the spool file carries an errno and is left alone (see _damaged).
DAMAGED = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    struct.error,
    EOFError,
    NotImplementedError,
    ValueError,
    IndexError,
    OSError,
)
# A damaged header can put kilobytes of the member into zipfile's message.
_DETAIL_CHARS = 200


@dataclass(frozen=True)
class ZipLimits:
    max_zip_bytes: int
    max_csv_bytes: int
    max_ratio: float


class Spooled:
    """The CSV of a zip already spooled whole, read by zipfile each time."""

    def __init__(self, file: IO[bytes], limits: ZipLimits, timings: Timings) -> None:
        self._file, self._limits, self._timings = file, limits, timings

    def read(self, size: Tally) -> AsyncIterator[bytes]:
        return unzip(self._file, self._limits, self._timings, size)

    def head(self, size: Tally) -> AsyncIterator[bytes]:
        """The whole CSV: it is all here (zip_stream.Streamed gives what has arrived)."""
        return self.read(size)

    async def more(self) -> None:
        """Nothing is still arriving."""

    async def settle(self) -> None:
        """Nothing is still arriving."""


def too_large(limits: ZipLimits) -> BadExport:
    return BadExport("too_large", f"the zip is larger than {limits.max_zip_bytes} bytes (IMPORTER_MAX_ZIP_BYTES)")


def open_archive(file: IO[bytes]) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(file)
    except DAMAGED as exc:
        raise _damaged(exc, BadExport("not_a_zip", f"'data' is not a zip file ({_detail(exc)})")) from None


async def unzip(file: IO[bytes], limits: ZipLimits, timings: Timings, size: Tally) -> AsyncIterator[bytes]:
    """The bytes of the zip's single CSV member, in chunks, counted into ``size`` as they pass."""
    with open_archive(file) as archive:
        info = single_member(archive, limits)
        ceiling = min(limits.max_csv_bytes, int(limits.max_ratio * max(info.compress_size, 1)))
        try:
            with archive.open(info) as member:
                while True:
                    with timings.timed("unzip"):
                        chunk = member.read(_READ)
                    if not chunk:
                        break
                    size.n += len(chunk)
                    if size.n > ceiling:
                        raise _bomb(f"{info.filename[:200]!r} decompresses to more than its directory says")
                    yield chunk
        except DAMAGED as exc:
            message = f"the zip member {info.filename[:200]!r} cannot be read: {_detail(exc)}"
            raise _damaged(exc, BadExport("corrupt_zip", message)) from None


def _damaged(exc: BaseException, refusal: BadExport) -> BaseException:
    """The refusal for damaged bytes; an OSError with an errno is the disk failing, not the zip."""
    return exc if isinstance(exc, OSError) and exc.errno is not None else refusal


def _detail(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "…"


def single_member(archive: zipfile.ZipFile, limits: ZipLimits) -> zipfile.ZipInfo:
    infos = archive.infolist()
    if not infos:
        raise BadExport("empty_zip", "the zip holds no file")
    for info in infos:
        if not info.filename:
            raise BadExport("unsafe_member_name", "a zip member has an empty name (a damaged directory?)")
        if _unsafe(info.filename):
            raise BadExport(
                "unsafe_member_name",
                f"the zip member {info.filename[:200]!r} has an absolute path or '..'; nothing was extracted",
            )
    directories = [i.filename for i in infos if i.is_dir()]
    if directories:
        raise BadExport("directory_member", f"the zip holds a directory ({directories[0][:200]!r}), not one CSV")
    if len(infos) > 1:
        names = ", ".join(repr(i.filename[:100]) for i in infos[:5])
        raise BadExport("several_members", f"the zip holds {len(infos)} files ({names}); an export holds one CSV")
    info = infos[0]
    if info.flag_bits & 0x1:
        raise BadExport("encrypted_zip", f"the zip member {info.filename[:200]!r} is encrypted")
    if info.file_size > limits.max_csv_bytes:
        raise _bomb(f"{info.filename[:200]!r} would decompress to {info.file_size} bytes (IMPORTER_MAX_CSV_BYTES)")
    if info.file_size > limits.max_ratio * max(info.compress_size, 1):
        ratio = info.file_size / max(info.compress_size, 1)
        raise _bomb(
            f"{info.filename[:200]!r} is compressed {ratio:.0f} to 1 (IMPORTER_MAX_ZIP_RATIO {limits.max_ratio:.0f})"
        )
    return info


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or bool(_DRIVE.match(name))


def _bomb(detail: str) -> BadExport:
    return BadExport("zip_bomb", f"refused as a zip bomb: {detail}")
