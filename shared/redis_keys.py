"""Every Redis key and channel Conduit uses, in one place so no two modules disagree."""

from __future__ import annotations

PREFIX = "conduit"


def database(redis: object) -> int:
    """The database number a client works in (0 for a cluster or an unknown client)."""
    pool = getattr(redis, "connection_pool", None)
    return int(getattr(pool, "connection_kwargs", {}).get("db") or 0)


# Pub/sub channels belong to the whole Redis server, not to a database: two Conduits (or two test runs)
# sharing a server in different databases would hear each other. So each channel name holds the database.


def tokens_changed(redis: object) -> str:
    """Published (message: "tenant/provider/generation") whenever a token record changes."""
    return f"{PREFIX}:db{database(redis)}:tokens:changed"


def events(redis: object) -> str:
    """The live-view events every service emits (shared/events.py)."""
    return f"{PREFIX}:db{database(redis)}:events"


# Sorted set of "tenant/provider" scored by when the scheduler should next refresh it.
TOKENS_DUE = f"{PREFIX}:tokens:due"


def token(tenant: str, provider: str) -> str:
    return f"{PREFIX}:token:{tenant}:{provider}"


def token_fence(tenant: str, provider: str) -> str:
    return f"{PREFIX}:token-fence:{tenant}:{provider}"


def token_lock(tenant: str, provider: str) -> str:
    return f"{PREFIX}:token-lock:{tenant}:{provider}"


def pair_member(tenant: str, provider: str) -> str:
    return f"{tenant}/{provider}"


def parse_pair(member: str) -> tuple[str, str]:
    tenant, _, provider = member.partition("/")
    return tenant, provider


def response_cache(tenant: str, provider: str, digest: str) -> str:
    return f"{PREFIX}:cache:{tenant}:{provider}:{digest}"


# Set of paused import schedules, members "tenant" or "tenant/module"; the scheduler skips their fires.
SCHEDULES_PAUSED = f"{PREFIX}:schedules:paused"


def scheduler_imports(export_date: str) -> str:
    """The set of import job ids the schedulers enqueued for one export date."""
    return f"{PREFIX}:scheduler:imports:{export_date}"
