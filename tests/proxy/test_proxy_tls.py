"""The proxy against an upstream over real TLS on 127.0.0.1, as every production provider is (``https://``)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from devtools.pki import make_pki
from services.auth_proxy.metrics import STREAMED
from tests.proxy.conftest import Proxy
from tests.third_party import ThirdParty, pattern_bytes, serve

SIZE = 3_000_001


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A CA file for the proxy to trust, and the upstream's server context with a certificate it signed."""
    made = make_pki(tmp_path_factory.mktemp("pki"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(made.cert, made.key)
    return made.ca, server


@pytest.fixture
def tls_proxy(
    start_proxy: Callable[..., Any], party: ThirdParty, pki: tuple[Path, ssl.SSLContext]
) -> Callable[..., Any]:
    """The proxy with the demo provider's API over TLS (its token endpoint stays plain, as in the fixtures)."""
    ca_file, server_tls = pki

    @asynccontextmanager
    async def start(trust: bool = True) -> AsyncIterator[Proxy]:
        async with serve(party.app(), tls=server_tls) as tls_url:
            overrides: dict[str, Any] = {"proxy_upstream_ca_file": ca_file} if trust else {}
            async with start_proxy(party, api_base_url=f"{tls_url}/api/", **overrides) as proxy:
                yield proxy

    return start


async def test_requests_and_large_answers_over_tls(tls_proxy: Callable[..., Any]) -> None:
    copied = STREAMED.labels("copy")._value.get()  # type: ignore[attr-defined]
    async with tls_proxy() as proxy:
        small = await proxy.get("/resources/42?x=1")
        assert small.status == 200 and (await small.json())["path"] == "/api/resources/42?x=1"
        assert proxy.party.api_calls[-1].tenant_client == "acme-demo"
        big = await proxy.get(f"/pattern?size={SIZE}")
        assert await big.read() == pattern_bytes(SIZE)

        async def chunks() -> Any:
            for _ in range(32):
                yield b"u" * (1 << 16)

        upload = await proxy.request("POST", "/upload", data=chunks())
        assert (await upload.json())["received"] == 32 << 16
    # TLS bytes cannot be spliced: the large answer took the copy path.
    assert STREAMED.labels("copy")._value.get() == copied + 1  # type: ignore[attr-defined]
    # The small and the large answer shared one kept-alive TLS connection.
    assert proxy.party.api_peers[0] == proxy.party.api_peers[1]


async def test_an_untrusted_certificate_is_a_502_not_a_leak(
    tls_proxy: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_proxy(trust=False) as proxy:
        calls = len(proxy.party.api_calls)
        response = await proxy.get("/resources/42")
        assert response.status == 502
        body = await response.json()
        assert body["error"] == "upstream_unreachable" and "TLS handshake failed" in body["message"]
        assert "Bearer" not in str(body) and "token" not in body["message"]
        # Nothing reached the API: the TLS handshake failed before any request was sent.
        assert len(proxy.party.api_calls) == calls
    # Whoever runs the proxy sees why, and nothing secret.
    [logged] = [str(r.msg) for r in caplog.records if "upstream unreachable" in str(r.msg)]
    assert "CERTIFICATE_VERIFY_FAILED" in logged and "Bearer" not in logged and "secret" not in logged


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from services.auth_proxy.settings import ProxySettings

    with pytest.raises(ValidationError, match="proxy_upstream_ca_file"):
        ProxySettings(proxy_upstream_ca_file=tmp_path / "nope.pem")


async def test_tls_connections_receive_in_smaller_pieces(party: ThirdParty, pki: tuple[Path, ssl.SSLContext]) -> None:
    """A canary: asyncio's ciphertext buffer is shrunk through its private attributes; a Python that
    renames them would silently bring back 256 KiB per connection, and this fails instead."""
    from services.auth_proxy.transport.upstream import UpstreamPool
    from services.auth_proxy.transport.upstream_connection import _CIPHERTEXT_READ, Origin

    ca_file, server_tls = pki
    async with serve(party.app(), tls=server_tls) as url:
        pool = UpstreamPool(
            limit=1,
            connect_timeout=1,
            read_timeout=1,
            read_bufsize=1 << 16,
            tls=ssl.create_default_context(cafile=ca_file),
        )
        conn = await pool._connect(Origin.parse(url))
        try:
            assert conn.transport is not None
            protocol = conn.transport._ssl_protocol  # type: ignore[attr-defined]
            assert protocol.max_size == len(protocol._ssl_buffer) == _CIPHERTEXT_READ
        finally:
            conn.close()
            await pool.close()
