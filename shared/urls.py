"""Naming a Redis or PostgreSQL URL in logs and error messages without its password."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# libpq also accepts credentials as query parameters (postgresql://host/db?password=...).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def redact_url(url: str) -> str:
    """The URL with any password, in the user part or the query, replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key in _SECRET_PARAMS for key, _ in pairs):
        query = urlencode([(key, "***" if key in _SECRET_PARAMS else value) for key, value in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
