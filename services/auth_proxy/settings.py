"""Settings of the auth proxy (``CONDUIT_PROXY_*`` and the common ``CONDUIT_*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, FilePath

from shared.settings import TokenSettings


class CacheRoute(BaseModel):
    """GET responses under ``prefix`` may be cached for ``ttl`` seconds (the upstream's max-age wins)."""

    prefix: str = Field(pattern=r"^/")
    ttl: float = Field(gt=0)


class ProxySettings(TokenSettings):
    """The proxy listens here, forwards with these limits and refreshes tokens with these rules."""

    proxy_host: str = "0.0.0.0"
    proxy_port: int = Field(default=8080, ge=0, le=65535)
    # CA bundle that upstream TLS certificates are verified against, instead of the system's
    # (a private CA, or a TLS-intercepting egress gateway). Unset: the system's trust store.
    proxy_upstream_ca_file: FilePath | None = None
    # Upstream timeouts: a connect or read timeout gives the caller a 504.
    proxy_connect_timeout: float = Field(default=5.0, gt=0)
    proxy_read_timeout: float = Field(default=60.0, gt=0)
    # Connections kept open to all upstreams together (0 = unlimited).
    proxy_pool_size: int = Field(default=512, ge=0)
    # Bodies up to this size are buffered so a request can be replayed after a 401;
    # larger or chunked ones stream through and a 401 is passed back as it is.
    proxy_replay_body_limit: int = Field(default=1 << 20, ge=0)
    # Responses up to this size are read whole (cheaper); larger ones stream with backpressure.
    proxy_buffer_response_limit: int = Field(default=64 << 10, ge=0)
    # A compressed answer (decoded so an echoed token can be masked) may decode to at most this many times
    # its compressed size: gzip reaches 1032:1 only on a run of one byte, real JSON or CSV 20 to 50:1.
    # Past it the answer is a decompression bomb, refused with a 502.
    proxy_max_decoded_ratio: float = Field(default=200.0, gt=1)
    # Limit on one request header line; larger headers are refused with a 431.
    proxy_max_header_size: int = Field(default=8190, gt=0)
    # Seconds an idle caller connection is kept open for its next request.
    proxy_keepalive_timeout: float = Field(default=75.0, gt=0)
    proxy_access_log: bool = True
    # Large sized answers go socket to socket with splice(2) where neither leg is TLS (Linux).
    proxy_splice: bool = True
    # Seconds SIGTERM waits for in-flight requests before closing.
    proxy_shutdown_timeout: float = Field(default=30.0, ge=0)
    proxy_cache_enabled: bool = False
    proxy_cache_routes: list[CacheRoute] = Field(default_factory=list)
    proxy_cache_max_entry_bytes: int = Field(default=8 << 20, gt=0)
