"""The proxy's Prometheus metrics. Label values are tenant/provider names and codes, never secrets."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "conduit_proxy_requests_total",
    "Requests answered by the proxy, by tenant, provider, method and status class (2xx, 4xx, ...).",
    ["tenant", "provider", "method", "status_class"],
)
UPSTREAM_LATENCY = Histogram(
    "conduit_proxy_upstream_seconds",
    "Time from sending a request upstream to receiving its response headers.",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
CACHE = Counter(
    "conduit_proxy_cache_total",
    "Response cache lookups by result (hit, miss, store, bypass; refused: an entry that failed to open for its key).",
    ["tenant", "provider", "result"],
)
STREAMED = Counter(
    "conduit_proxy_streamed_responses_total",
    "Answers over the buffer limit, by how the body went: splice (socket to socket in the kernel) or copy.",
    ["how"],
)
REFUSED = Counter(
    "conduit_proxy_refused_total",
    "Requests refused before any upstream call, by reason.",
    ["reason"],
)


class RequestCounters:
    """Caches labelled children: ``Counter.labels`` costs more than the increment on the hot path."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, str, str], object] = {}
        self._latency: dict[str, object] = {}
        self._cache: dict[tuple[str, str, str], object] = {}

    def count(self, tenant: str, provider: str, method: str, status: int) -> None:
        key = (tenant, provider, method, f"{status // 100}xx")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = REQUESTS.labels(*key)
        child.inc()  # type: ignore[attr-defined]

    def cache(self, tenant: str, provider: str, result: str) -> None:
        key = (tenant, provider, result)
        child = self._cache.get(key)
        if child is None:
            child = self._cache[key] = CACHE.labels(*key)
        child.inc()  # type: ignore[attr-defined]

    def latency(self, provider: str, seconds: float) -> None:
        child = self._latency.get(provider)
        if child is None:
            child = self._latency[provider] = UPSTREAM_LATENCY.labels(provider)
        child.observe(seconds)  # type: ignore[attr-defined]
