"""The auth proxy over real HTTP on 127.0.0.1, with real Redis and a real token endpoint."""

from __future__ import annotations

import asyncio
import base64
import gzip
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from shared.token_store import TokenRecord
from tests.proxy.conftest import Proxy
from tests.third_party import ThirdParty, running_third_party


async def raw_request(url: str, head: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client library would send these targets)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(head)
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


async def test_forwards_with_the_tenants_token(proxy: Proxy) -> None:
    response = await proxy.get(
        "/resources/42?b=2&a=1&a=%20x",
        headers={"Authorization": "Bearer caller", "Cookie": "s=1", "X-Request-ID": "req-1", "X-Custom": "kept"},
    )
    assert response.status == 200
    assert (await response.json())["client"] == "acme-demo"
    assert response.headers["X-Request-ID"] == "req-1"
    call = proxy.party.api_calls[-1]
    assert call.path_qs == "/api/resources/42?b=2&a=1&a=%20x"
    assert call.headers["Authorization"].startswith("Bearer at-acme-demo-")
    assert "Cookie" not in call.headers and "X-Tenant-ID" not in call.headers
    assert call.headers["X-Custom"] == "kept" and call.headers["X-Request-ID"] == "req-1"


async def test_creates_a_request_id_when_none_is_given(proxy: Proxy) -> None:
    response = await proxy.get("/resources/1")
    assert len(response.headers["X-Request-ID"]) == 32
    assert proxy.party.api_calls[-1].headers["X-Request-ID"] == response.headers["X-Request-ID"]


async def test_tenants_get_their_own_tokens(proxy: Proxy) -> None:
    first = await (await proxy.get("/x", tenant="acme")).json()
    second = await (await proxy.get("/x", tenant="globex")).json()
    assert (first["client"], second["client"]) == ("acme-demo", "globex-demo")
    assert len(proxy.party.token_calls) == 2


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_all_methods_and_bodies(proxy: Proxy, method: str) -> None:
    response = await proxy.request(method, "/things", data=b'{"a": 1}', headers={"Content-Type": "application/json"})
    assert response.status == 200
    assert (await response.json())["method"] == method
    assert proxy.party.api_calls[-1].body == b'{"a": 1}'


async def test_head_keeps_the_length_and_sends_no_body(proxy: Proxy) -> None:
    response = await proxy.request("HEAD", "/big?size=5000000")
    assert response.status == 200
    assert response.headers["Content-Length"] == "5000000"
    assert await response.read() == b""


async def test_large_bodies_stream_both_ways(proxy: Proxy) -> None:
    async def chunks() -> Any:
        for _ in range(64):
            yield b"y" * (1 << 16)

    upload = await proxy.request("POST", "/upload", data=chunks())
    assert (await upload.json())["received"] == 64 << 16
    download = await proxy.get("/big?size=50000000")
    total = 0
    async for chunk in download.content.iter_chunked(1 << 20):
        total += len(chunk)
    assert download.headers["Content-Length"] == "50000000" and total == 50_000_000


async def test_hop_by_hop_headers_are_dropped_both_ways(proxy: Proxy) -> None:
    response = await proxy.get(
        "/x",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Proxy-Authorization": "p",
            "TE": "trailers",
        },
    )
    assert response.status == 200
    sent = proxy.party.api_calls[-1].headers
    assert not {"X-Secret-Hop", "Proxy-Authorization", "TE"} & set(sent)
    # A small answer is sent whole with its length: no framing header of its own either.
    assert "Transfer-Encoding" not in response.headers
    assert int(response.headers["Content-Length"]) == len(await response.read())
    # The upstream's hop-by-hop headers, and the one its Connection header names, stop at the proxy.
    upstream = await proxy.get("/hops")
    assert upstream.status == 200 and await upstream.json() == {"hops": True}
    assert not {"X-Up-Hop", "Keep-Alive", "Trailer", "Proxy-Authenticate"} & set(upstream.headers)
    assert upstream.headers.get("Connection", "keep-alive") == "keep-alive"


async def test_upstream_401_refreshes_once_and_retries(proxy: Proxy) -> None:
    await proxy.get("/x")
    first_token = proxy.party.api_calls[-1].headers["Authorization"][7:]
    proxy.party.revoked.add(first_token)
    response = await proxy.request("POST", "/x", data=b"replayable")
    assert response.status == 200
    assert len(proxy.party.token_calls) == 2
    assert proxy.party.api_calls[-1].body == b"replayable"
    assert proxy.party.api_calls[-1].headers["Authorization"][7:] != first_token


async def test_401_that_persists_is_passed_back_after_one_retry(proxy: Proxy) -> None:
    await proxy.get("/x")
    proxy.party.refuse_all_tokens = True
    calls_before = len(proxy.party.api_calls)
    response = await proxy.get("/x")
    assert response.status == 401
    assert len(proxy.party.api_calls) - calls_before == 2
    assert len(proxy.party.token_calls) == 2


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_429_and_5xx_reach_the_caller_unchanged(proxy: Proxy, status: int) -> None:
    response = await proxy.get(f"/status/{status}")
    assert response.status == status
    assert response.headers["Retry-After"] == "7"
    assert (await response.json()) == {"status": status}


async def test_redirects_are_passed_back_not_followed(proxy: Proxy) -> None:
    response = await proxy.get("/redirect", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "http://127.0.0.1:9/elsewhere"
    assert len(proxy.party.api_calls) == 1


async def test_read_timeout_gives_504_json(start_proxy: Callable[..., Any], party: ThirdParty) -> None:
    async with start_proxy(party, proxy_read_timeout=0.3) as proxy:
        response = await proxy.get("/slow?delay=2")
        assert response.status == 504
        body = await response.json()
        assert body["error"] == "upstream_timeout" and body["request_id"]


async def test_unreachable_upstream_gives_502(start_proxy: Callable[..., Any], party: ThirdParty) -> None:
    async with running_third_party() as gone:
        pass  # its port is closed again: the provider "gone" is unreachable from now on
    async with start_proxy(party, extra={"gone": gone}) as proxy:
        # A valid token is already stored, so only the API call itself can fail.
        fence = await proxy.refresher.store.next_fence("acme", "gone")
        record = TokenRecord(
            "acme", "gone", 1, SecretStr("at"), None, "Bearer", time.time(), time.time() + 60, time.time() + 30
        )
        assert await proxy.refresher.store.put(record, fence)
        response = await proxy.get("/x", headers={"X-Provider": "gone"})
        body = await response.json()
        assert response.status == 502 and body["error"] == "upstream_unreachable" and "TLS" not in body["message"]


@pytest.mark.parametrize(
    "target",
    [
        b"http://evil.example/x",
        b"//evil.example/x",
        b"/a/../../x",
        b"/a/%2e%2e/%2e%2e/x",
        b"/a%2f..%2fx",
        b"/a\\..\\x",
        b"/@evil.example/x",
    ],
)
async def test_escaping_targets_get_400_before_any_upstream_call(proxy: Proxy, target: bytes) -> None:
    head = b"GET " + target + b" HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nConnection: close\r\n\r\n"
    status, body = await raw_request(proxy.url, head)
    assert status == 400, body
    assert b"refused_target" in body or b"Bad Request" in body
    assert proxy.party.api_calls == [] and proxy.party.token_calls == []


async def test_crlf_in_a_header_is_refused(proxy: Proxy) -> None:
    head = b"GET /x HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nX-Evil: a\rInjected: b\r\nConnection: close\r\n\r\n"
    status, _ = await raw_request(proxy.url, head)
    assert status == 400
    assert proxy.party.api_calls == []


async def test_oversized_header_is_refused(proxy: Proxy) -> None:
    response = await proxy.get("/x", headers={"X-Big": "a" * 20000})
    assert response.status in (400, 431)
    assert proxy.party.api_calls == []


async def test_missing_and_unknown_tenant(proxy: Proxy) -> None:
    missing = await proxy.get("/x", tenant=None)
    assert missing.status == 400 and (await missing.json())["error"] == "missing_tenant"
    unknown = await proxy.get("/x", tenant="nobody")
    body = await unknown.json()
    assert unknown.status == 404 and body["error"] == "unknown_tenant" and "nobody" in body["message"]
    provider = await proxy.get("/x", headers={"X-Provider": "nope"})
    assert provider.status == 404 and (await provider.json())["error"] == "unknown_provider"
    assert proxy.party.api_calls == []


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ([("X-Tenant-ID", "globex")], "ambiguous_tenant"),  # with the acme one the test adds
        ([("X-Tenant-ID", "")], "ambiguous_tenant"),
        ([("X-Provider", "demo"), ("X-Provider", "demo")], "ambiguous_provider"),
        ([("X-Provider", "demo,billing")], "ambiguous_provider"),
        ([("X-Request-ID", "a"), ("X-Request-ID", "b")], "ambiguous_request_id"),
        ([("X-Request-ID", "a,b")], "ambiguous_request_id"),
    ],
)
async def test_routing_headers_given_twice_or_with_a_comma_are_refused(
    proxy: Proxy, headers: list[tuple[str, str]], code: str
) -> None:
    response = await proxy.session.get(proxy.url + "/x", headers=[("X-Tenant-ID", "acme"), *headers])
    body = await response.json()
    assert (response.status, body["error"]) == (400, code)
    assert len(response.headers["X-Request-ID"]) == 32  # a fresh one, never either of the caller's
    assert "globex" not in body["message"] and "billing" not in body["message"]
    assert proxy.party.api_calls == [] and proxy.party.token_calls == []


async def test_a_comma_in_the_tenant_header_is_ambiguous(proxy: Proxy) -> None:
    response = await proxy.get("/x", tenant="acme,globex")
    assert (response.status, (await response.json())["error"]) == (400, "ambiguous_tenant")
    assert proxy.party.api_calls == []


async def test_no_token_obtainable_gives_503_with_retry_after(proxy: Proxy) -> None:
    proxy.party.token_mode = "invalid_client"
    response = await proxy.get("/x")
    body = await response.json()
    assert response.status == 503 and body["error"] == "no_token"
    assert int(response.headers["Retry-After"]) > 0
    assert "secret" not in body["message"]
    # Refused for good: a second request does not call the token endpoint again.
    await proxy.get("/x")
    assert len(proxy.party.token_calls) == 1


async def test_a_token_endpoint_echoing_the_request_leaks_no_secret(
    proxy: Proxy, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    proxy.party.token_mode = "echo_request"
    secret = "secret-acme-demo-s3cr3t"
    spellings = [secret, base64.b64encode(f"acme-demo:{secret}".encode()).decode()]

    response = await proxy.get("/x")

    body = await response.text()
    assert response.status == 503 and "invalid_client" in body  # the echo did reach the error path
    logged = capsys.readouterr().err + "\n".join(str(r.msg) for r in caplog.records)
    assert "token refresh failed" in logged  # the refusal was logged, so the log was looked at
    for spelling in spellings:
        assert spelling not in body and spelling not in logged, spelling


async def test_second_provider_by_header(start_proxy: Callable[..., Any], party: ThirdParty) -> None:
    async with running_third_party() as other:
        async with start_proxy(party, extra={"billing": other}) as proxy:
            response = await proxy.get("/invoices", headers={"X-Provider": "billing"})
            assert (await response.json())["client"] == "acme-billing"
            assert other.api_calls[-1].headers.get("X-Provider") is None
            assert party.api_calls == []


async def test_rotated_token_is_used_within_a_second(proxy: Proxy) -> None:
    await proxy.get("/x")
    old = proxy.party.api_calls[-1].headers["Authorization"]
    rotated = await proxy.refresher.refresh("acme", "demo", trigger="operator", force=True)
    assert rotated is not None and rotated.access_token is not None
    new = f"Bearer {rotated.access_token.get_secret_value()}"
    deadline = time.monotonic() + 1.0
    seen = old
    while seen != new and time.monotonic() < deadline:
        await proxy.get("/x")
        seen = proxy.party.api_calls[-1].headers["Authorization"]
    assert seen == new


async def test_ops_endpoints(proxy: Proxy) -> None:
    assert (await proxy.get("/health_check", tenant=None)).status == 200
    ready = await proxy.get("/ready", tenant=None)
    assert ready.status == 200, await ready.text()
    await proxy.get("/x")
    metrics = await (await proxy.get("/metrics", tenant=None)).text()
    assert 'conduit_proxy_requests_total{method="GET",provider="demo",status_class="2xx",tenant="acme"}' in metrics
    assert "conduit_proxy_upstream_seconds_bucket" in metrics
    assert "conduit_token_refreshes_total" in metrics


async def test_response_cache_is_per_tenant_and_honours_cache_control(
    start_proxy: Callable[..., Any], party: ThirdParty
) -> None:
    routes = [{"prefix": "/cached", "ttl": 30}]
    async with start_proxy(party, proxy_cache_enabled=True, proxy_cache_routes=routes) as proxy:
        first = await (await proxy.get("/cached")).json()
        again = await proxy.get("/cached")
        assert again.headers.get("Age") is not None and await again.json() == first
        other = await (await proxy.get("/cached", tenant="globex")).json()
        assert other["client"] == "globex-demo"
        calls = len(party.api_calls)
        await proxy.get("/cached?cc=no-store")
        await proxy.get("/cached?cc=no-store")
        assert len(party.api_calls) == calls + 2
        await proxy.get("/cached", headers={"Cache-Control": "no-cache"})
        assert len(party.api_calls) == calls + 3
        await proxy.get("/x")
        await proxy.get("/x")
        assert len(party.api_calls) == calls + 5


async def test_a_compressed_request_body_reaches_the_upstream_as_sent(proxy: Proxy) -> None:
    original = b'{"rows": "' + b"r" * 50_000 + b'"}'
    squeezed = gzip.compress(original)
    response = await proxy.request("POST", "/x", data=squeezed, headers={"Content-Encoding": "gzip"})
    assert response.status == 200
    call = proxy.party.api_calls[-1]
    # The fake provider decompresses what it got: only the bytes as sent decompress to the original.
    assert call.headers["Content-Encoding"] == "gzip" and call.body == original
    assert int(call.headers["Content-Length"]) == len(squeezed)


async def test_a_refused_request_with_a_body_leaves_the_connection_usable(proxy: Proxy) -> None:
    parts = urlsplit(proxy.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            b"POST /x HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: nobody\r\nContent-Length: 70000\r\n\r\n" + b"b" * 70_000
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert b"unknown_tenant" in await reader.readexactly(length)
        writer.write(b"GET /after HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()
    assert [c.path_qs for c in proxy.party.api_calls] == ["/api/after"]


async def test_an_upgrade_is_not_proxied_and_the_connection_closes_after_the_answer(proxy: Proxy) -> None:
    head = (
        b"GET /ws HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    status, _ = await raw_request(proxy.url, head)  # reads to EOF: the proxy closed after answering
    assert status == 200
    sent = proxy.party.api_calls[-1].headers
    assert "Upgrade" not in sent and "upgrade" not in sent.get("Connection", "").lower()


async def test_a_caller_leaving_mid_upload_is_not_an_error(
    proxy: Proxy, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = urlsplit(proxy.url)
    _, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: p\r\nX-Tenant-ID: acme\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"10000\r\n" + b"u" * 0x10000 + b"\r\n")
    await writer.drain()
    await proxy.party.api_called.wait()  # the upload has reached the provider
    writer.close()
    await writer.wait_closed()
    # The proxy goes on serving, and logs no error (the fake provider's aiohttp server does: its upload broke off).
    assert (await proxy.get("/after")).status == 200
    assert not [r for r in caplog.records if r.levelname == "ERROR" and r.name != "aiohttp.server"]
    # Counted as the caller's doing (4xx), not as the provider failing (5xx).
    assert '"path":"/upload","status":400' in capsys.readouterr().err


async def test_one_damaged_token_record_leaves_the_proxy_ready_but_a_wrong_key_does_not(
    proxy: Proxy, redis: Any
) -> None:
    await proxy.get("/x", tenant="acme")
    await proxy.get("/x", tenant="globex")
    await redis.hset("conduit:token:acme:demo", "sealed", b"not a sealed record")
    ready = await proxy.get("/ready", tenant=None)
    assert ready.status == 200, await ready.text()
    assert (await proxy.get("/x", tenant="globex")).status == 200
    await redis.hset("conduit:token:globex:demo", "sealed", b"nor is this")
    ready = await proxy.get("/ready", tenant=None)
    body = await ready.json()
    assert ready.status == 503 and body["checks"]["token_store"] != "ok", body
