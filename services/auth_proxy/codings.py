"""Compressed answers undone before the token mask reads them, and asked for only where the proxy can undo them.

The mask (``echo.py``) finds a token in the bytes a provider sent; in a gzip
body those bytes are not the token's, so a compressed echo would reach the
caller and the cache unmasked. Hence: upstream, a caller's ``Accept-Encoding``
keeps only the codings zlib undoes (gzip, deflate; no ``br``, ``zstd`` or
``*``), and only ``identity`` where it sends a ``Range``; downstream, every
content and transfer coding of an answer is undone in pieces of bounded size,
so the caller gets the plain (masked) body. An answer in any other coding is
refused, as is one whose decoded size outgrows its compressed size more than
a compressor could legitimately make it (a decompression bomb), and one whose
compressed data is bad or cut short.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from multidict import CIMultiDict, CIMultiDictProxy

_GZIP = frozenset({"gzip", "x-gzip"})
_DECODABLE = _GZIP | {"deflate"}
_ACCEPTABLE = _DECODABLE | {"identity"}
_SEEN: dict[str, str] = {}
# The most one decoded piece may hold: memory per answer stays flat whatever the ratio.
PIECE = 64 << 10
# Decoded bytes allowed beyond max_ratio times the coded ones, so that tiny answers never count as bombs.
# The ratio is of the coded bytes zlib has consumed, so a bomb shows within its first decoded piece: before
# the answer begins, while the proxy still holds what it decoded (up to PROXY_BUFFER_RESPONSE_LIMIT).
_RATIO_FLOOR = 32 << 10
# Headers that describe the coded bytes, not the decoded ones the caller gets.
_CODED_ONLY = ("Content-Encoding", "Content-MD5", "Content-Digest", "Repr-Digest")


class UndecodableAnswer(ValueError):
    """An answer the proxy cannot read to mask: the message names why (never the body's bytes)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def upstream_accept_encoding(given: str, ranged: bool) -> str:
    """What the upstream is told the answer may be coded as: the caller's list minus what zlib cannot undo.

    A range of a compressed body cannot be decoded without the bytes before it, so a ranged request
    asks for ``identity``, whether the caller sent an ``Accept-Encoding`` or not.
    """
    if ranged:
        return "identity"
    wanted = _SEEN.get(given)
    if wanted is None:
        kept = [item.strip() for item in given.split(",") if _coding(item) in _ACCEPTABLE]
        wanted = ", ".join(kept) or "identity"
        if len(_SEEN) < 256:  # callers send a handful of lists; a dict is half an lru_cache's cost
            _SEEN[given] = wanted
    return wanted


def _coding(item: str) -> str:
    return item.partition(";")[0].strip().lower()


def answer_codings(headers: CIMultiDictProxy[str]) -> list[str]:
    """The codings applied to an answer's body, in the order applied (content codings, then transfer ones)."""
    listed = [*headers.getall("Content-Encoding", ()), *headers.getall("Transfer-Encoding", ())]
    codings = [_coding(item) for line in listed for item in line.split(",")]
    return [c for c in codings if c not in ("", "identity", "chunked")]


def coded(headers: CIMultiDictProxy[str]) -> bool:
    """Whether an answer names a coding of its body (``chunked`` alone is none): two or three lookups."""
    if "Content-Encoding" in headers:
        return True
    framing = headers.get("Transfer-Encoding")
    return framing is not None and (framing != "chunked" or len(headers.getall("Transfer-Encoding")) > 1)


def decoder_for(codings: list[str], max_ratio: float) -> Decoder:
    """A decoder undoing ``codings``; UndecodableAnswer naming the first coding zlib cannot undo."""
    for coding in codings:
        if coding not in _DECODABLE:
            raise UndecodableAnswer(
                "upstream_encoding_unsupported", f"the answer is coded {coding[:32]!r}, which the proxy cannot decode"
            )
    return Decoder(codings, max_ratio)


def decoded_headers(headers: CIMultiDict[str]) -> None:
    """The caller's headers for the decoded body, in place: no coding, and an ETag only weak.

    A strong ETag names the coded bytes; the decoded ones are the same resource in another form, which
    is what a weak ETag says (RFC 9110 §8.8.1), and a weak one still works in ``If-None-Match``.
    """
    for name in _CODED_ONLY:
        headers.popall(name, None)
    etag = headers.get("ETag")
    if etag is not None and not etag.startswith("W/"):
        headers["ETag"] = "W/" + etag


class Decoder:
    """Undoes a stack of gzip/deflate codings as the bytes arrive, in pieces of at most ``PIECE`` bytes."""

    def __init__(self, codings: list[str], max_ratio: float) -> None:
        # The last coding applied is the first undone.
        self._layers = [_Layer(coding in _GZIP) for coding in reversed(codings)]
        self._max_ratio = max_ratio
        self._coded = 0
        self._decoded = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of the next coded bytes; UndecodableAnswer for bad data or a bomb."""
        return self._through(0, data)

    def end(self) -> Iterator[bytes]:
        """What the layers still hold; UndecodableAnswer where the coded data stopped short."""
        for at, layer in enumerate(self._layers):
            if not layer.complete():
                raise UndecodableAnswer("upstream_bad_encoding", "the answer's compressed data is cut short")
            yield from self._through(at + 1, layer.flush())

    def _through(self, at: int, data: bytes) -> Iterator[bytes]:
        if at == len(self._layers):
            if data:
                self._decoded += len(data)
                if self._decoded > self._coded * self._max_ratio + _RATIO_FLOOR:
                    raise UndecodableAnswer(
                        "upstream_decompression_bomb",
                        f"the answer decodes to over {self._max_ratio:g} times its compressed size"
                        " (a decompression bomb; PROXY_MAX_DECODED_RATIO)",
                    )
                yield data
            return
        layer = self._layers[at]
        while data:
            out, rest = layer.decompress(data)
            if not at:
                self._coded += len(data) - len(rest)
            data = rest
            yield from self._through(at + 1, out)


class _Layer:
    """One coding: gzip (any number of members, RFC 1952 §2.2) or deflate (zlib-wrapped, or raw as some send)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._obj: zlib._Decompress | None = zlib.decompressobj(31) if gzip else None
        self._head = b""  # deflate: the first bytes, until they tell zlib-wrapped from raw
        self._fed = False
        self._members = 1
        self._out = 0

    def decompress(self, data: bytes) -> tuple[bytes, bytes]:
        """Some decoded bytes (at most ``PIECE``) and the coded ones still to feed."""
        self._fed = True
        obj = self._obj
        if obj is None:
            self._head += data
            if len(self._head) < 2:
                return b"", b""
            obj = self._obj = zlib.decompressobj(15 if _zlib_wrapped(self._head) else -15)
            data, self._head = self._head, b""
        if obj.eof:
            if not self._gzip:
                raise UndecodableAnswer("upstream_bad_encoding", "the answer has bytes after its deflate data")
            self._next_member()
            obj = self._obj = zlib.decompressobj(31)
        try:
            out = obj.decompress(data, PIECE)
        except zlib.error:
            raise UndecodableAnswer("upstream_bad_encoding", "the answer's compressed data is not valid") from None
        self._out += len(out)
        return out, obj.unconsumed_tail or obj.unused_data

    def _next_member(self) -> None:
        # A member costs a new zlib stream (about 1 µs): empty ones, 20 bytes each, cost 100 times the CPU of
        # real data per byte. bgzip's members hold 64 KiB each; one per KiB decoded is far past any real use.
        self._members += 1
        if self._members > 64 + self._out // 1024:
            raise UndecodableAnswer(
                "upstream_decompression_bomb", "the answer is gzip members that decode to next to nothing"
            )

    def complete(self) -> bool:
        # No byte at all is an empty body, as some servers label one; else the stream must have ended.
        return not self._fed or (self._obj is not None and self._obj.eof and not self._head)

    def flush(self) -> bytes:
        return self._obj.flush() if self._obj is not None else b""


def _zlib_wrapped(head: bytes) -> bool:
    # RFC 1950 §2.2: method 8 and a header checksum; a raw deflate stream almost never looks like that.
    return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
