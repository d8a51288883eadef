"""Where Redis is, besides its URL: a CA file for TLS, the Sentinels and the master's name; checked at start.

Kept apart from ``shared.redis_connect`` so reading the settings does not import redis or arq.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RedisLocation:
    """What besides the URL says how to reach Redis: a CA file for TLS, the Sentinels and the master's name."""

    ca_file: Path | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"


def parse_sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (IPv6 as ``[::1]:26379``) as pairs; raises ValueError naming a bad entry by its
    number: an entry may carry a password (``user:pass@host:port``), so it is never repeated."""
    pairs = []
    entries = [part.strip() for part in value.split(",")]
    for number, entry in enumerate(entries, 1):
        if not entry:
            continue
        try:
            parts = urlsplit(f"//{entry}")  # the standard library's host:port parser, brackets included
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None  # its message repeats the port as written
        if not host or port is None or parts.path or parts.username:
            raise ValueError(f"sentinel {number} of {len(entries)}: expected host:port, e.g. redis-sentinel-0:26379")
        pairs.append((host, port))
    return tuple(pairs)


def check_scheme(url: str) -> None:
    """redis:// or rediss://; the message repeats nothing of the URL, which may hold a password (``pass:@host``
    reads as the scheme ``pass``)."""
    if urlsplit(url).scheme not in ("redis", "rediss"):
        raise ValueError("expected a redis:// or rediss:// URL")


def check_url(url: str, location: RedisLocation) -> None:
    """Refuse combinations that would fail only at the first connection; the message names the settings."""
    scheme = urlsplit(url).scheme
    if location.ca_file is not None and scheme != "rediss":
        raise ValueError("CONDUIT_REDIS_CA_FILE is set but CONDUIT_REDIS_URL is not rediss:// (TLS)")
    if location.ca_file is not None and location.sentinels:
        # arq connects Sentinel-found masters with ssl=True alone and drops any CA, so the workers could not
        # verify the master's certificate; refused here rather than failing on every worker at run time.
        raise ValueError(
            "CONDUIT_REDIS_CA_FILE with CONDUIT_REDIS_SENTINELS is not supported (arq cannot pass a CA to a "
            "Sentinel-found master); add the CA to the system trust store instead"
        )
