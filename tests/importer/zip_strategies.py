"""Hypothesis strategies for zips: as real writers make them, then damaged the ways a hostile sender would.

``written()`` draws what zipfile writes: any method, one or more members (a
directory, an unsafe name), to a seekable file (sizes in the local header) or
an unseekable one (a data descriptor after the data), zip64 or not, with a
comment. ``hostile()`` takes such a zip and edits it at the grammar's edges:
bytes overwritten, inserted or cut; a field of the local header or of the
central directory changed (so the two disagree); junk before or after; a
member hidden before the one the directory lists; a member that inflates far
past its size (a bomb).
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile

from hypothesis import strategies as st

METHODS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
# Offsets of the fields a hostile edit changes: in the local file header, and in a central directory entry.
LOCAL_FIELDS = {"flags": (6, 2), "method": (8, 2), "crc": (14, 4), "compressed": (18, 4), "size": (22, 4)}
CENTRAL_FIELDS = {
    "flags": (8, 2),
    "method": (10, 2),
    "crc": (16, 4),
    "compressed": (20, 4),
    "size": (24, 4),
    "offset": (42, 4),
}
_CSV = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda n: b"id,name\n" + b"".join(b"%d,user%d\n" % (i, i) for i in range(n)), st.integers(0, 400)),
    st.builds(lambda n: b"\x00" * n, st.integers(0, 300_000)),  # compresses a thousand to one
)
_NAMES = st.sampled_from(["data.csv", "users.csv", "dir/", "../evil.csv", "/abs.csv", "C:x.csv", "n\u00e9.csv"])


class _Unseekable(io.RawIOBase):
    """An output zipfile cannot seek back in: it writes a data descriptor after each member's data."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def build(
    members: list[tuple[str, bytes]], method: int, seekable: bool = True, zip64: bool = False, comment: bytes = b""
) -> bytes:
    out: io.BytesIO | _Unseekable = io.BytesIO() if seekable else _Unseekable()
    with (
        warnings.catch_warnings(action="ignore", category=UserWarning),  # a name twice: hostile, on purpose
        zipfile.ZipFile(out, "w", compression=method) as archive,  # type: ignore[arg-type]
    ):
        archive.comment = comment
        for name, data in members:
            if name.endswith("/"):
                archive.writestr(zipfile.ZipInfo(name), b"")
                continue
            with archive.open(name, "w", force_zip64=zip64) as member:
                member.write(data)
    return out.getvalue() if isinstance(out, io.BytesIO) else bytes(out.data)


@st.composite
def written(draw: st.DrawFn, methods: list[int] = METHODS) -> bytes:
    method = draw(st.sampled_from(methods))
    first = [("data.csv", draw(_CSV))]
    more = draw(st.lists(st.tuples(_NAMES, st.binary(max_size=100)), max_size=2, unique_by=lambda m: m[0]))
    members = first + [m for m in more if m[0] != "data.csv"]
    if draw(st.booleans()):
        members = [(draw(_NAMES), members[0][1])] + members[1:]
    return build(members, method, draw(st.booleans()), draw(st.booleans()), draw(st.binary(max_size=8)))


@st.composite
def single(draw: st.DrawFn) -> bytes:
    """What exports are: one CSV, deflated (or stored), written in one go or streamed out."""
    method = draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED]))
    return build([("data.csv", draw(_CSV))], method, draw(st.booleans()), draw(st.booleans()))


def _put(data: bytearray, at: int, size: int, value: int) -> None:
    if 0 <= at and at + size <= len(data):
        data[at : at + size] = value.to_bytes(size, "little")


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.one_of(single(), written())))
    for _ in range(draw(st.integers(0, 2))):
        edit = draw(st.sampled_from(["bytes", "local", "central", "junk before", "junk after", "hidden"]))
        if edit == "bytes":
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            how = draw(st.sampled_from(["overwrite", "insert", "truncate"]))
            if how == "overwrite" and data:
                data[at] = draw(st.integers(0, 255))
            elif how == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            else:
                del data[at:]
        elif edit in ("local", "central"):
            fields = LOCAL_FIELDS if edit == "local" else CENTRAL_FIELDS
            at, size = fields[draw(st.sampled_from(sorted(fields)))]
            base = 0 if edit == "local" else data.rfind(b"PK\x01\x02")
            value = draw(st.one_of(st.integers(0, 16), st.integers(0, (1 << (8 * size)) - 1)))
            if base >= 0:
                _put(data, base + at, size, value)
        elif edit == "junk before":
            data[0:0] = draw(st.binary(min_size=1, max_size=40))
        elif edit == "junk after":
            data += draw(st.binary(min_size=1, max_size=40))
        else:
            data[0:0] = hidden_member(draw(st.binary(max_size=200)))
    return bytes(data)


def hidden_member(csv: bytes) -> bytes:
    """A whole member's local header and data with no directory entry: what only a stream would read."""
    one = build([("data.csv", csv)], zipfile.ZIP_DEFLATED)
    return one[: one.rfind(b"PK\x01\x02")]


def central_offset(data: bytes) -> int:
    """Where the (last) central directory entry starts."""
    return data.rfind(b"PK\x01\x02")


def with_field(data: bytes, where: str, name: str, value: int) -> bytes:
    """``data`` with one field of its local header (``where="local"``) or directory entry changed."""
    at, size = (LOCAL_FIELDS if where == "local" else CENTRAL_FIELDS)[name]
    base = 0 if where == "local" else central_offset(data)
    edited = bytearray(data)
    struct.pack_into("<I" if size == 4 else "<H", edited, base + at, value)
    return bytes(edited)
