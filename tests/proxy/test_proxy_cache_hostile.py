"""The response cache against a hostile caller: a hit answers only the request h11 reads, for its own tenant.

A cache hit answers without going upstream, a path the strict-head differential
test (run without the cache) never takes, and a GET with a body must bypass the
cache with its framing intact: each case here
sends bytes on a raw socket to a proxy with ``/cached`` cached and requires what
a strict reader reads (h11), request by request, each answered for the tenant it
names, whether the answer came from the upstream or the cache.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from tests.http_heads import strict_reading
from tests.proxy.conftest import Proxy
from tests.proxy.test_proxy_strict_heads import exchange
from tests.third_party import ThirdParty

SMUGGLED = b"GET /cached HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: globex\r\n\r\n"


@pytest.fixture
async def cached(start_proxy: Callable[..., Any], party: ThirdParty) -> AsyncIterator[Proxy]:
    routes = [{"prefix": "/cached", "ttl": 30}]
    async with start_proxy(party, proxy_cache_enabled=True, proxy_cache_routes=routes) as proxy:
        # Both entries stored, by requests as bare as the cases' (Accept and Accept-Encoding are in the key).
        answers = await exchange(proxy.url, SMUGGLED.replace(b"globex", b"acme") + SMUGGLED)
        assert [a.status for a in answers] == [200, 200]
        yield proxy


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"


CASES = {
    # A body on a GET of a cached path: it goes upstream (a body is not in the key), and another request
    # inside it must stay body.
    "content-length body": (
        b"GET /cached HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nContent-Length: %d\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        1,
    ),
    "chunked body": (
        b"GET /cached HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _chunked(SMUGGLED),
        1,
    ),
    # Two pipelined hits, then the cache bypassed: three answers, each for its own tenant.
    "pipelined": (
        b"GET /cached HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\n\r\n"
        + SMUGGLED
        + b"GET /cached HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nCache-Control: no-cache\r\n\r\n",
        1,
    ),
    # Percent-encoding and query variants of the path are other entries (or none), never another tenant's;
    # HEAD is never answered from the cache.
    "spellings": (
        b"GET /cache%64 HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: globex\r\n\r\n"
        b"GET /cached? HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\n\r\n"
        b"HEAD /cached HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: globex\r\n\r\n",
        3,
    ),
}


@pytest.mark.parametrize("case", CASES)
async def test_a_cache_hit_answers_what_h11_reads_for_its_own_tenant(cached: Proxy, case: str) -> None:
    data, upstream_calls = CASES[case]
    cached.party.api_calls.clear()
    answers = await exchange(cached.url, data)

    read = strict_reading(data)
    assert [a.status for a in answers] == [200] * len(read)
    for request, answer in zip(read, answers, strict=True):
        if request.method == "GET":
            assert orjson.loads(answer.body)["client"] == f"{request.one('x-tenant-id')}-demo"
    assert len(cached.party.api_calls) == upstream_calls  # the hits were hits
