"""The decoder against zlib's one-shot functions: whatever the stack of codings and however the bytes are cut."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.auth_proxy.codings import PIECE, UndecodableAnswer, decoder_for, upstream_accept_encoding


def _raw(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


CODERS = {"gzip": lambda d: gzip.compress(d, mtime=0), "deflate": zlib.compress, "raw": _raw}
LABELS = {"gzip": "gzip", "deflate": "deflate", "raw": "deflate"}


def decode(labels: list[str], coded: bytes, cuts: list[int]) -> bytes:
    decoder = decoder_for(labels, 200)
    bounds = [0, *sorted(c % (len(coded) + 1) for c in cuts), len(coded)]
    pieces = [p for a, b in zip(bounds, bounds[1:], strict=False) for p in decoder.feed(coded[a:b])]
    pieces += decoder.end()
    assert all(len(p) <= PIECE for p in pieces)
    return b"".join(pieces)


stacks = st.lists(st.sampled_from(sorted(CODERS)), min_size=1, max_size=3)
# Text-like bodies (short runs of few letters, the odd long run) compress like answers do, not like bombs.
bodies = st.lists(st.one_of(st.binary(max_size=64), st.text("ab {}:,", max_size=64).map(str.encode)), max_size=40)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(stack=stacks, parts=bodies, repeat=st.integers(1, 3000), cuts=st.lists(st.integers(0, 10**6), max_size=8))
@example(stack=["raw"], parts=[b"x"], repeat=1, cuts=[1])  # raw deflate told from zlib by its first two bytes
def test_decoding_in_pieces_gives_the_plain_body(
    stack: list[str], parts: list[bytes], repeat: int, cuts: list[int]
) -> None:
    plain = b"".join(parts) * (repeat if len(set(b"".join(parts))) > 8 else 1)
    coded = plain
    for coding in stack:
        coded = CODERS[coding](coded)
    try:
        assert decode([LABELS[c] for c in stack], coded, cuts) == plain
    except UndecodableAnswer as exc:
        # Only a body past the ratio somewhere is a bomb: repeats of a short piece, stacked, get there.
        assert exc.code == "upstream_decompression_bomb" and len(plain) > max(20 * len(coded), 32 << 10)


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(coding=st.sampled_from(sorted(CODERS)), plain=st.binary(max_size=2000), cut=st.integers(1, 10**6))
def test_coded_data_cut_short_is_refused(coding: str, plain: bytes, cut: int) -> None:
    coded = CODERS[coding](plain)
    with pytest.raises(UndecodableAnswer) as refused:
        decode([LABELS[coding]], coded[: 1 + cut % (len(coded) - 1)], [])  # no byte at all is an empty body
    assert refused.value.code == "upstream_bad_encoding"


@pytest.mark.parametrize("stack", [["gzip"], ["deflate"], ["gzip", "gzip"], ["deflate", "gzip"]])
def test_a_bomb_is_refused_within_its_first_pieces(stack: list[str]) -> None:
    coded = b"\0" * (32 << 20)
    for coding in stack:
        coded = CODERS[coding](coded)
    decoder = decoder_for(stack, 200)
    out = 0
    with pytest.raises(UndecodableAnswer) as refused:
        for piece in decoder.feed(coded):
            out += len(piece)
    assert refused.value.code == "upstream_decompression_bomb"
    assert out <= PIECE  # refused before more than one piece is out: before the answer begins


@given(given_=st.lists(st.sampled_from(["gzip", "GZIP;q=0.5", "deflate", "br", "zstd", "*", "identity", "compress"])))
@settings(max_examples=100, derandomize=True, database=None)
def test_the_upstream_is_never_offered_a_coding_the_proxy_cannot_undo(given_: list[str]) -> None:
    wanted = upstream_accept_encoding(", ".join(given_), False)
    offered = {item.partition(";")[0].strip().lower() for item in wanted.split(",")}
    assert offered <= {"gzip", "deflate", "identity"} and offered
    assert upstream_accept_encoding(", ".join(given_), True) == "identity"


def test_gzip_members_that_decode_to_nothing_are_refused() -> None:
    """Each member costs a new zlib stream: 10 MB of empty ones took half a second of CPU."""
    empty = gzip.compress(b"", mtime=0)
    with pytest.raises(UndecodableAnswer) as refused:
        decode(["gzip"], empty * 100_000, [])
    assert refused.value.code == "upstream_decompression_bomb"
    block = gzip.compress(bytes(range(256)) * 256, mtime=0)  # 64 KiB members, as bgzip writes them
    assert decode(["gzip"], block * 200 + empty, [5]) == bytes(range(256)) * 256 * 200
