"""The tenant-aware token store: one encrypted record per tenant and provider in Redis.

A record is written only by the holder of the newest fencing token (see
``put``), so a refresher that stalled past its lock can never overwrite a newer
token with an older one. Every write publishes on ``redis_keys.tokens_changed`` so proxies
swap their in-memory copy within a second.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from shared import redis_keys
from shared.crypto import RecordUnreadable, Sealer
from shared.token_expiry import usable_until

ErrorKind = Literal["transient", "permanent"]

# Write the sealed record only if no newer fencing token has written since, then
# move the pair in the refresh schedule and announce the change, all atomically.
_PUT_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
if current > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'sealed', ARGV[1], 'fence', ARGV[2])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[3])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
end
redis.call('PUBLISH', KEYS[3], ARGV[5])
return 1
"""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token and the history an operator needs to trust it. Its repr never shows a secret."""

    tenant: str
    provider: str
    generation: int = 0
    access_token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    token_type: str = "Bearer"
    issued_at: float = 0.0
    expires_at: float = 0.0
    refresh_due_at: float = 0.0
    last_refresh_at: float | None = None
    last_refresh_how: str | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    error_kind: ErrorKind | None = None
    failures: int = 0
    next_attempt_at: float | None = None

    @property
    def lifetime(self) -> float:
        return max(self.expires_at - self.issued_at, 0.0)

    def usable(self, now: float, skew: float) -> bool:
        """There is a token and it is not (about to be) expired: ``shared.token_expiry.usable_until``."""
        return self.access_token is not None and now < usable_until(self.expires_at, self.issued_at, skew)

    def refresh_blocked_until(self) -> float | None:
        """When a failed refresh may be tried again (backoff, or a long pause after a refusal)."""
        return self.next_attempt_at if self.error_kind is not None else None

    def schedule_score(self) -> float | None:
        """When the scheduler should next refresh this pair; ``None`` takes it off the schedule."""
        if self.error_kind is not None:
            return self.next_attempt_at
        return self.refresh_due_at if self.access_token is not None else time.time()

    def replace(self, **changes: Any) -> TokenRecord:
        return dataclasses.replace(self, **changes)


def _encode(record: TokenRecord) -> bytes:
    data = dataclasses.asdict(record)
    for name in ("access_token", "refresh_token"):
        secret = getattr(record, name)
        data[name] = secret.get_secret_value() if secret is not None else None
    return orjson.dumps(data)


def _decode(raw: bytes) -> TokenRecord:
    data = orjson.loads(raw)
    for name in ("access_token", "refresh_token"):
        if data.get(name) is not None:
            data[name] = SecretStr(data[name])
    fields = {f.name for f in dataclasses.fields(TokenRecord)}
    return TokenRecord(**{k: v for k, v in data.items() if k in fields})


class TokenStore:
    """Reads and writes token records; owns nothing but the Redis keys in ``shared.redis_keys``."""

    def __init__(self, redis: Redis, sealer: Sealer) -> None:
        self.redis = redis
        self._sealer = sealer
        self._put = redis.register_script(_PUT_SCRIPT)

    async def get(self, tenant: str, provider: str) -> TokenRecord | None:
        # redis-py types its commands for both clients at once, hence the ignores on awaits.
        sealed = await self.redis.hget(redis_keys.token(tenant, provider), "sealed")  # type: ignore[misc]
        if sealed is None:
            return None
        return self._open(sealed, tenant, provider)

    async def next_fence(self, tenant: str, provider: str) -> int:
        """A number larger than every fence handed out before for this pair."""
        return int(await self.redis.incr(redis_keys.token_fence(tenant, provider)))

    async def put(self, record: TokenRecord, fence: int) -> bool:
        """Store the record unless a holder of a newer fence already wrote; True if stored."""
        score = record.schedule_score()
        member = redis_keys.pair_member(record.tenant, record.provider)
        written = await self._put(
            keys=[
                redis_keys.token(record.tenant, record.provider),
                redis_keys.TOKENS_DUE,
                redis_keys.tokens_changed(self.redis),
            ],
            args=[
                self._sealer.seal(_encode(record)),
                fence,
                member,
                "" if score is None else repr(score),
                f"{member}/{record.generation}",
            ],
        )
        return bool(written)

    def lock(self, tenant: str, provider: str, timeout: float, blocking_timeout: float | None) -> Lock:
        """The cross-process lock one refresher holds while it calls the token endpoint."""
        return self.redis.lock(
            redis_keys.token_lock(tenant, provider),
            timeout=timeout,
            blocking=blocking_timeout is not None and blocking_timeout > 0,
            blocking_timeout=blocking_timeout,
            sleep=0.05,
        )

    async def due(self, until: float) -> list[tuple[str, str, float]]:
        """Pairs whose next refresh is due at or before ``until``, earliest first."""
        rows = await self.redis.zrangebyscore(redis_keys.TOKENS_DUE, "-inf", until, withscores=True)
        return [(*redis_keys.parse_pair(m.decode()), score) for m, score in rows]

    async def all(self) -> AsyncIterator[TokenRecord]:
        """Every stored record, each checked against its key as ``get`` does (raises on the first that is not)."""
        async for key in self.redis.scan_iter(match=redis_keys.token("*", "*"), count=500):
            sealed = await self.redis.hget(key, "sealed")  # type: ignore[misc]
            if sealed is not None:
                _, _, tenant, provider = (key.decode() if isinstance(key, bytes) else key).split(":")
                yield self._open(sealed, tenant, provider)

    def _open(self, sealed: bytes, tenant: str, provider: str) -> TokenRecord:
        """The record under this pair's key, refused unless it is this pair's own.

        The key is not sealed, only the record: one moved to another pair's key (by anyone who can
        write Redis but has no token key) would still open, and that pair's requests would carry
        the other tenant's token. The pair sealed inside the record is what decides.
        """
        record = _decode(self._sealer.open(sealed))
        if (record.tenant, record.provider) != (tenant, provider):
            raise RecordUnreadable(
                f"the token record stored for {tenant}/{provider} is sealed for {record.tenant}/{record.provider}"
            )
        return record
