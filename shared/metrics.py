"""Prometheus metrics that more than one service records (token refreshes happen in importers and proxies).

Labels carry tenant and provider names and short reason codes, never a token or secret.
"""

from __future__ import annotations

from prometheus_client import Counter

TOKEN_REFRESHES = Counter(
    "conduit_token_refreshes_total",
    "Successful token refreshes, by why they happened (scheduled, on_demand, upstream_401, operator).",
    ["tenant", "provider", "trigger"],
)
TOKEN_REFRESH_FAILURES = Counter(
    "conduit_token_refresh_failures_total",
    "Failed token refreshes, by reason (timeout, unreachable, http_error, invalid_response, invalid_grant, ...).",
    ["tenant", "provider", "reason"],
)
