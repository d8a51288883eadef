"""Settings of the auth proxy (``CONDUIT_PROXY_*`` and the common ``CONDUIT_*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.refresh import RefreshPolicy
from shared.settings import CommonSettings


class CacheRoute(BaseModel):
    """GET responses under ``prefix`` may be cached for ``ttl`` seconds (the upstream's max-age wins)."""

    prefix: str = Field(pattern=r"^/")
    ttl: float = Field(gt=0)


class ProxySettings(CommonSettings):
    """The proxy listens here, forwards with these limits and refreshes tokens with these rules."""

    proxy_host: str = "0.0.0.0"
    proxy_port: int = Field(default=8080, ge=0, le=65535)
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
    # aiohttp's limit on one request header line; larger headers get a 400.
    proxy_max_header_size: int = Field(default=8190, gt=0)
    proxy_access_log: bool = True
    # Seconds SIGTERM waits for in-flight requests before closing.
    proxy_shutdown_timeout: float = Field(default=30.0, ge=0)
    proxy_cache_enabled: bool = False
    proxy_cache_routes: list[CacheRoute] = Field(default_factory=list)
    proxy_cache_max_entry_bytes: int = Field(default=8 << 20, gt=0)
    token_request_timeout: float = Field(default=10.0, gt=0)
    token_lock_timeout: float = Field(default=30.0, gt=0)
    token_expiry_skew: float = Field(default=30.0, ge=0)
    token_backoff_max: float = Field(default=300.0, gt=0)
    token_permanent_pause: float = Field(default=3600.0, gt=0)

    def refresh_policy(self) -> RefreshPolicy:
        return RefreshPolicy(
            request_timeout=self.token_request_timeout,
            lock_timeout=self.token_lock_timeout,
            expiry_skew=self.token_expiry_skew,
            backoff_max=self.token_backoff_max,
            permanent_pause=self.token_permanent_pause,
        )
