"""The proxy forwards a request only as a strict RFC 9112 reader (h11) reads the same bytes, or refuses it.

Each case goes on a raw socket to a real proxy (real Redis token store) in
front of the recording third party. Per answer, either the proxy refused the
request itself (a 4xx with its own error code, and no upstream call for it),
or the upstream got exactly the request h11 reads at that place in the bytes:
same method, path, tenant (so the same tenant's token), forwarded headers and
body. A proxy that reads a request h11 does not (a smuggled second request,
an HTTP/0.9 line whose "headers" pick the tenant) fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings

from tests.http_heads import StrictRequest, request_bytes, strict_reading
from tests.proxy.conftest import Proxy
from tests.third_party import ApiCall

# The proxy's own refusals: each is answered before any upstream call.
REFUSALS = {
    "bad_request",
    "refused_target",
    "missing_tenant",
    "unknown_tenant",
    "unknown_provider",
    "ambiguous_tenant",
    "ambiguous_provider",
    "ambiguous_request_id",
    "bad_request_body",
}
# Never forwarded: hop-by-hop (RFC 9110 §7.6.1), the caller's credentials and routing, and the framing,
# which the proxy sets itself for what it sends.
NOT_FORWARDED = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "cookie",
    "x-tenant-id",
    "x-provider",
    "x-request-id",
    "content-length",
}
SET_BY_THE_PROXY = {"host", "authorization", "x-request-id", "content-length", "transfer-encoding"}
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass
class Answer:
    status: int
    body: bytes

    @property
    def refusal(self) -> str | None:
        """The proxy's error code when this is one of its own 4xx refusals."""
        if not 400 <= self.status < 500:
            return None
        with contextlib.suppress(ValueError):
            code = orjson.loads(self.body).get("error")
            return code if code in REFUSALS else None
        return None


async def exchange(url: str, data: bytes) -> list[Answer]:
    """Send the bytes, then EOF; every answer the proxy gives before it closes."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(data)
    writer.write_eof()
    received = b""
    try:
        async with asyncio.timeout(10):
            while chunk := await reader.read(1 << 16):
                received += chunk
    except ConnectionResetError:
        pass  # a refusal closes with the rest unread: what arrived before the reset still counts
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse_answers(received)


def parse_answers(data: bytes) -> list[Answer]:
    answers = []
    while data:
        head, found, rest = data.partition(b"\r\n\r\n")
        assert found, f"a truncated answer: {data[:200]!r}"
        lines = head.split(b"\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if b"content-length" in fields:
            size = int(fields[b"content-length"])
            body, data = rest[:size], rest[size:]
        elif fields.get(b"transfer-encoding") == b"chunked":
            body, data = dechunk(rest)
        else:
            body, data = rest, b""
        answers.append(Answer(int(lines[0].split(b" ")[1]), body))
    return answers


def dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        body, data = body + data[:size], data[size + 2 :]
        if not size:
            return body, data


def assert_forwarded_as_read(call: ApiCall, read: StrictRequest) -> None:
    """The upstream got the request h11 read: its method, path, tenant's token, headers and body."""
    tenant, provider, request_id = read.one("x-tenant-id"), read.values.get("x-provider"), read.one("x-request-id")
    assert tenant is not None, f"forwarded with {read.values.get('x-tenant-id')} as the tenant"
    assert provider is None or read.one("x-provider") == "demo", f"forwarded with {provider} as the provider"
    assert len(read.values.get("x-request-id", [])) < 2 and "," not in "".join(read.values.get("x-request-id", []))
    assert call.tenant_client == f"{tenant}-demo", "the upstream got another tenant's token"
    assert (call.method, call.path_qs, call.body) == (read.method, "/api" + read.target, read.body)
    named = {t.strip().lower() for v in read.values.get("connection", []) for t in v.split(",")}
    expected = Counter((n, v) for n, v in read.headers if n not in NOT_FORWARDED | named)
    got = Counter(
        (n.lower(), v)
        for n, v in call.header_lines
        if n.lower() not in SET_BY_THE_PROXY and (n.lower() != "content-type" or "content-type" in read.values)
    )
    assert got == expected
    sent_id = dict((n.lower(), v) for n, v in call.header_lines)["x-request-id"]
    if request_id is not None and SANE_REQUEST_ID.fullmatch(request_id):
        assert sent_id == request_id


async def assert_strict(proxy: Proxy, data: bytes) -> list[Answer]:
    proxy.party.api_calls.clear()
    answers = await exchange(proxy.url, data)
    read = strict_reading(data)
    calls = iter(list(proxy.party.api_calls))
    for index, answer in enumerate(answers):
        if answer.refusal is not None:
            continue
        call = next(calls, None)
        assert call is not None, f"answer {index} is {answer.status} {answer.body[:200]!r}, not a refusal"
        assert index < len(read), f"request {index} was forwarded; a strict reader reads {len(read)} request(s)"
        assert_forwarded_as_read(call, read[index])
        assert answer.status == 200
    assert next(calls, None) is None, "an upstream call with no answer to the caller"
    return answers


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=request_bytes())
# The cases found at aff0668: an HTTP/0.9 line whose "headers" choose the tenant ...
@example(data=b"GET /resources/c\r\nX-Tenant-ID: globex\r\nX-Pad: HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\n\r\n")
# ... routing headers given twice (the first one won) ...
@example(data=b"GET /resources/c HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: globex\r\nX-Tenant-ID: acme\r\n\r\n")
@example(data=b"GET /resources/c HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nX-Provider: demo\r\nX-Provider: b\r\n\r\n")
# ... and a chunked HTTP/1.0 request kept alive, the request behind it served.
@example(
    data=b"POST /resources/c HTTP/1.0\r\nConnection: keep-alive\r\nX-Tenant-ID: acme\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n0\r\n\r\nGET /smuggled HTTP/1.0\r\nConnection: keep-alive\r\nX-Tenant-ID: globex\r\n\r\n"
)
# What this test found by itself at 1bb51de (shrunk), the last one after the fix of the others.
@example(
    data=b"GET /resources/c HTTP/1.0\r\nHost: p\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: globex\r\n\r\n"
)
@example(data=b"GET /resources/c HTTP/1.1\r\nX-Tenant-ID: acme\r\nHost: p\r\nX-Tenant-ID: acme\r\n\r\n")
# Found while writing the strict reading: llhttp gives a chunked body's trailer fields to the next request.
@example(
    data=b"POST /resources/c HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\nX-Tenant-ID: globex\r\n\r\nGET /next HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\n\r\n"
)
@example(
    data=b"GET /resources/c HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nConnection: keep-alive\r\n"
    b"Connection: X-Custom\r\nX-Custom: kept\r\n\r\n"
)
async def test_the_proxy_forwards_only_what_a_strict_reader_reads(proxy: Proxy, data: bytes) -> None:
    answers = await assert_strict(proxy, data)
    # What the corpus exercised, for --hypothesis-show-statistics.
    event(f"forwarded {len(proxy.party.api_calls)} of the {len(strict_reading(data))} requests h11 reads")
    for answer in answers:
        event(f"refused: {answer.refusal}" if answer.refusal else f"answered {answer.status}")


@pytest.mark.parametrize(
    "data",
    [
        b"GET /resources/c?x=%2e HTTP/1.1\r\nhost:p\r\nx-tenant-id:   globex  \r\nX-Custom: \x80kept\r\n\r\n",
        b"POST /r%2Ex HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nContent-Length: 5\r\n\r\nhello"
        b"PUT /second HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: globex\r\nContent-Type: text/plain\r\n\r\n",
        b"POST /up HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n0\r\n\r\n",
        b"GET /a HTTP/1.0\r\nConnection: keep-alive, X-Dropped\r\nX-Dropped: 1\r\nX-Tenant-ID: acme\r\n\r\n"
        b"GET /b HTTP/1.0\r\nX-Tenant-ID: globex\r\nX-Request-ID: caller-1\r\n\r\n",
    ],
)
async def test_requests_a_strict_reader_accepts_are_forwarded(proxy: Proxy, data: bytes) -> None:
    """Strict is not everything refused: valid edge cases of the grammar go through, each as h11 reads it."""
    answers = await assert_strict(proxy, data)
    assert [a.status for a in answers] == [200] * len(strict_reading(data))
    assert len(proxy.party.api_calls) == len(answers) > 0
