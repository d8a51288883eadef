"""A byte the module's encoding refuses is named on its line, whatever the file's line ends and chunking.

The decoder counted only LF when it named the line of bytes not in the encoding, so a file with CR-only
line ends (which the definition reads, docs/importer.md) had every such error on "line 1". Each generated
file is lines of text ending in LF, CRLF or CR (mixed or not), one line holding a byte the encoding
refuses, decoded in pieces of a drawn size (a CRLF cut in two is one line end): the refusal names that line,
and the bytes, the same whatever the pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.importer.csv_stream import TextSeen, decode_text
from services.importer.errors import BadExport
from services.importer.stats import Timings

# An encoding and a byte it refuses: a lone UTF-8 lead byte, one Windows-1252 leaves undefined.
REFUSED = {"utf-8": b"\xeb", "cp1252": b"\x81"}
_TEXT = st.text(st.sampled_from('ab,"é '), max_size=6)


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def _refusal(data: bytes, encoding: str, size: int) -> str:
    with pytest.raises(BadExport) as refused:
        async for _ in decode_text(_pieces(data, size), encoding, Timings(), TextSeen()):
            pass
    return refused.value.message


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    lines=st.lists(st.tuples(_TEXT, st.sampled_from(["\n", "\r\n", "\r"])), min_size=1, max_size=8),
    data=st.data(),
    encoding=st.sampled_from(sorted(REFUSED)),
    size=st.integers(1, 16),
)
# Found at fb54f9a: CR-only line ends, the refused byte named on "line 1".
@example(lines=[("id", "\r"), ("1", "\r"), ("2", "\r")], data=None, encoding="utf-8", size=64)
def test_bytes_not_in_the_encoding_are_named_on_their_line(
    lines: list[tuple[str, str]], data: st.DataObject | None, encoding: str, size: int
) -> None:
    bad = len(lines) if data is None else data.draw(st.integers(1, len(lines)))
    text, end = lines[bad - 1]
    cut = len(text) if data is None else data.draw(st.integers(0, len(text)))
    lines[bad - 1] = (text[:cut], end)
    encoded = [t.encode(encoding) + e.encode() for t, e in lines]
    encoded[bad - 1] = text[:cut].encode(encoding) + REFUSED[encoding] + text[cut:].encode(encoding) + end.encode()
    message = asyncio.run(_refusal(b"".join(encoded), encoding, size))
    assert message.startswith(f"line {bad}: bytes {REFUSED[encoding].hex()} are not valid {encoding};"), message
