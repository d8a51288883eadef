"""The envelope scanner against orjson: for any document, in any chunking, the same verdict and the same ``data``.

The scanner (services/importer/envelope.py) is a hand-written JSON reader, so it
is held to a real one: every document orjson refuses, the scanner refuses with a
``BadExport``; every document orjson reads as ``{"module_name": "m", "data": s}``
(plus other members), the scanner passes on exactly ``s``. Two documented
differences: the scanner also refuses a top-level member given twice (orjson keeps
the last), and it lets raw tab, CR and LF through inside a string (the generator
never puts them there).
"""

from __future__ import annotations

import asyncio
import binascii
import json
from collections.abc import AsyncIterator

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.importer.envelope import b64decode, base64_payload
from services.importer.errors import BadExport
from services.importer.stats import Timings

_KEYS = ['"module_name"', '"data"', '"x"', '"d\\u0061ta"', '"module_\\u006eame"', '"y\\ud83d\\ude00"']
# Pieces of JSON values, each valid or broken at one of the grammar's edges.
_STRING_BODIES = [
    "QUJD",
    "QU\\nJD",
    "QU\\/JD",
    "QU\\bJD",
    "QU\\fJD",
    "QU\\qJD",
    "\\u0041BCD",
    "\\u+041",
    "\\u00",
    "\\ud83d\\ude00",
    "\\ud83d",
    "\\ude00",
    "\\ud83dx\\ude00",
    '\\"',
    "\\\\",
    "\x01",
    "\x0c",
    "\x1f",
    "é",
    "m",
    "",
]
_SCALARS = ["1", "-0.5e3", "1.2.3", "01", "tru", "true", "false", "null", "nul", "NaN", "Infinity", "+1", "-"]
_CONTAINERS = ["[]", "{}", "[1,2]", '{"a":[1,{"b":"}"}]}', "[}", "[1,]", '{"a"}', "[[[", '["\\q"]', '{"a":1,"a":2}']

ws = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])
string = st.lists(st.sampled_from(_STRING_BODIES), max_size=4).map(lambda parts: '"' + "".join(parts) + '"')
value = st.one_of(string, st.sampled_from(_SCALARS), st.sampled_from(_CONTAINERS))
key = st.one_of(st.sampled_from(_KEYS), string)


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    members = draw(st.lists(st.tuples(key, value), max_size=5))
    if draw(st.booleans()):  # mostly a well-formed envelope, so the accepting side is explored too
        members += [('"module_name"', '"m"'), ('"data"', draw(string))]
        members = draw(st.permutations(members))
    body = ",".join(f"{draw(ws)}{k}{draw(ws)}:{draw(ws)}{v}{draw(ws)}" for k, v in members)
    text = "{" + body + "}" + draw(st.sampled_from(["", " ", "\n", "x", "}", "{}"]))
    doc = text.encode()
    if draw(st.integers(0, 9)) == 0:
        doc = doc[: draw(st.integers(0, len(doc)))]
    cuts = sorted(draw(st.lists(st.integers(0, len(doc)), max_size=6)))
    return doc, cuts


async def _scan(doc: bytes, cuts: list[int]) -> bytes:
    async def chunks() -> AsyncIterator[bytes]:
        for start, end in zip([0, *cuts], [*cuts, len(doc)], strict=True):
            if end > start:
                yield doc[start:end]

    return b"".join([part async for part in base64_payload(chunks(), "m")])


def _expected(doc: bytes) -> bytes | None:
    """What the scanner must pass on, or None where it must refuse; read by orjson (and json, for duplicates)."""
    try:
        parsed = orjson.loads(doc)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    names = [name for name, _ in json.loads(doc, object_pairs_hook=lambda pairs: pairs)]
    if len(names) != len(set(names)):
        return None
    if parsed.get("module_name") != "m" or not isinstance(parsed.get("data"), str):
        return None
    return parsed["data"].encode()


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(case=documents())
# Found on the scanner before this test: '\b' and '\f' read as the letters 'b' and 'f' (so a backspace in
# 'data' became valid base64 and different bytes were imported), any other '\x' taken as 'x', bare words,
# broken numbers and unbalanced brackets in another member accepted, a character beyond the BMP refused.
@example(case=(b'{"module_name":"m","data":"QU\\bJD"}', []))
@example(case=(b'{"module_name":"m","data":"QU\\qJD"}', [28]))
@example(case=(b'{"module_name":"m","data":"QUJD","x":tru}', []))
@example(case=(b'{"module_name":"m","data":"QUJD","x":1.2.3}', []))
@example(case=(b'{"module_name":"m","data":"QUJD","x":[1,]}', []))
@example(case=(b'{"module_name":"m","data":"QUJD","x":"\\u+041"}', []))
@example(case=(b'{"module_name":"m","data":"QUJD","\\ud83d\\ude00":1}', [30, 33]))
@example(case=(b'{"module_name":"m","data":"QU\x01JD"}', []))
def test_the_scanner_reads_every_envelope_as_orjson_does(case: tuple[bytes, list[int]]) -> None:
    doc, cuts = case
    expected = _expected(doc)
    if expected is None:
        with pytest.raises(BadExport):
            asyncio.run(_scan(doc, cuts))
    else:
        assert asyncio.run(_scan(doc, cuts)) == expected


def test_a_skipped_member_is_bounded() -> None:
    huge = b'{"module_name":"m","data":"QUJD","x":[' + b"1," * (1 << 20) + b"1]}"
    with pytest.raises(BadExport, match=r"the value at byte 37 is longer than 1048576 bytes"):
        asyncio.run(_scan(huge, [100, 5000]))


_B64_PIECES = ["QUJD", "QQ==", "QUI=", "QU", "=", "\n", " ", "Q", "*"]


async def _decode(text: bytes, cuts: list[int]) -> bytes:
    async def chunks() -> AsyncIterator[bytes]:
        for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
            yield text[start:end]

    return b"".join([part async for part in b64decode(chunks(), Timings())])


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(pieces=st.lists(st.sampled_from(_B64_PIECES), min_size=1, max_size=6), data=st.data())
# Found at fb54f9a: padding in the middle, cut right after it, decoded as two pieces and accepted.
@example(pieces=["QQ==", "QUJD"], data=None)
def test_base64_in_any_cut_gets_strict_base64s_verdict_on_the_whole(pieces: list[str], data: st.DataObject) -> None:
    text = "".join(pieces).encode()
    cuts = [4] if data is None else sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=4)))
    whole = text.translate(None, b" \n")
    try:  # RFC 4648: whole 4-character groups (Python's strict mode lets a trailing "=" more pass)
        expected = binascii.a2b_base64(whole, strict_mode=True) if len(whole) % 4 == 0 else None
    except binascii.Error:
        expected = None
    if expected is None or not expected:
        with pytest.raises(BadExport):
            asyncio.run(_decode(text, cuts))
    else:
        assert asyncio.run(_decode(text, cuts)) == expected
