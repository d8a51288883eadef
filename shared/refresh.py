"""Single-flight token refresh across any number of processes.

The shape of aiohttp's token-refresh middleware example, lifted to many
processes: decide whether a refresh is needed, take the pair's lock in Redis,
read the record again (someone may have refreshed while we waited), call the
token endpoint once, and write the result under a fencing token so a
refresher that outlived its lock cannot overwrite a newer record.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from pydantic import SecretStr
from redis.exceptions import LockError, RedisError

from shared import events
from shared.logging import get_logger
from shared.metrics import TOKEN_REFRESH_FAILURES, TOKEN_REFRESHES
from shared.oauth import IssuedToken, TokenRequestError, request_token
from shared.tenants import TenantsConfig
from shared.token_store import TokenRecord, TokenStore

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When and how hard to refresh; every number is a setting of the services that refresh."""

    request_timeout: float = 10.0
    # Longer than a token request can take, so the lock outlives a healthy holder.
    lock_timeout: float = 30.0
    # Refresh at half the lifetime, minus up to `jitter` of it, so tokens issued together spread out.
    refresh_at: float = 0.5
    jitter: float = 0.1
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    # After a refusal for good (invalid_grant...), wait this long before trying on our own again.
    permanent_pause: float = 3600.0
    # A token this close to its expiry counts as expired (capped at a tenth of its lifetime).
    expiry_skew: float = 30.0
    # A token fetched because of an upstream 401 is not replaced because of another 401 for this long.
    reject_interval: float = 30.0


class RefreshBlocked(Exception):
    """The last refresh failed and the pair is backing off; ``retry_at`` says until when."""

    def __init__(self, record: TokenRecord, retry_at: float) -> None:
        super().__init__(f"refresh of {record.tenant}/{record.provider} is backing off: {record.last_error}")
        self.record = record
        self.retry_at = retry_at


class RefreshFailed(Exception):
    """This refresh failed; the record (with its error) is stored and attached."""

    def __init__(self, record: TokenRecord, error: TokenRequestError) -> None:
        super().__init__(f"refresh of {record.tenant}/{record.provider} failed: {error}")
        self.record = record
        self.error = error


class Refresher:
    """Refreshes tokens for the pairs of one tenants file; safe to run in every process at once."""

    def __init__(self, store: TokenStore, tenants: TenantsConfig, policy: RefreshPolicy | None = None) -> None:
        self.store = store
        self.tenants = tenants
        self.policy = policy or RefreshPolicy()

    async def refresh(
        self,
        tenant: str,
        provider: str,
        *,
        trigger: str,
        force: bool = False,
        rejected_generation: int | None = None,
        wait: bool = True,
    ) -> TokenRecord | None:
        """Make sure the pair has a fresh token and return the record.

        ``rejected_generation``: the upstream refused that token (401), so refresh
        unless the store already holds a newer one. ``wait=False`` returns at once
        when another process holds the lock (the scheduled job's choice).
        Raises :class:`RefreshBlocked` while backing off and :class:`RefreshFailed`
        when this attempt failed.
        """
        record = await self.store.get(tenant, provider)
        if not self._needed(record, force, rejected_generation):
            return record
        self._check_blocked(record, force)
        lock = self.store.lock(
            tenant, provider, self.policy.lock_timeout, self.policy.lock_timeout + 1.0 if wait else None
        )
        if not await lock.acquire():
            return await self.store.get(tenant, provider)
        try:
            # Whoever held the lock before us may have done the work already.
            record = await self.store.get(tenant, provider)
            if not self._needed(record, force, rejected_generation):
                return record
            self._check_blocked(record, force)
            return await self._refresh_locked(tenant, provider, record, trigger)
        finally:
            try:
                await lock.release()
            except (LockError, RedisError):
                log.warning("token lock expired before release", tenant=tenant, provider=provider)

    def _needed(self, record: TokenRecord | None, force: bool, rejected_generation: int | None) -> bool:
        if force or record is None or record.access_token is None:
            return True
        if rejected_generation is not None:
            return record.generation <= rejected_generation and not self._refused_again(record)
        now = time.time()
        return now >= record.refresh_due_at or not record.usable(now, self.policy.expiry_skew)

    def _refused_again(self, record: TokenRecord) -> bool:
        """A token fetched for a 401 and soon refused too: the token is not what the upstream refuses.

        A scope the client lacks, a path that is always 401: a new token per call would not help, would
        cost a token request per call (the provider's rate limit then refuses the real refreshes) and
        spend a rotating refresh token each time. So one refresh per ``reject_interval`` at most.
        """
        fetched_for_401 = (record.last_refresh_how or "").endswith("(upstream_401)")
        return fetched_for_401 and time.time() - (record.last_refresh_at or 0.0) < self.policy.reject_interval

    def _check_blocked(self, record: TokenRecord | None, force: bool) -> None:
        if force or record is None:
            return
        retry_at = record.refresh_blocked_until()
        if retry_at is not None and retry_at > time.time():
            raise RefreshBlocked(record, retry_at)

    async def _refresh_locked(
        self, tenant: str, provider: str, record: TokenRecord | None, trigger: str
    ) -> TokenRecord:
        fence = await self.store.next_fence(tenant, provider)
        current = record or TokenRecord(tenant=tenant, provider=provider)
        try:
            issued = await request_token(
                self.tenants.providers[provider],
                self.tenants.credentials(tenant, provider),
                self._refresh_token(tenant, provider, current),
                self.policy.request_timeout,
            )
        except TokenRequestError as exc:
            failed = await self._record_failure(current, fence, exc)
            raise RefreshFailed(failed, exc) from None
        fresh = self._fresh_record(current, issued, trigger)
        if not await self._put_with_retry(fresh, fence):
            # A newer fence wrote while we were stalled; theirs wins.
            return await self.store.get(tenant, provider) or fresh
        TOKEN_REFRESHES.labels(tenant, provider, trigger).inc()
        events.emit(self.store.redis, "token", "refreshed", tenant=tenant, provider=provider, trigger=trigger)
        log.info(
            "token refreshed",
            tenant=tenant,
            provider=provider,
            trigger=trigger,
            generation=fresh.generation,
            expires_in=round(fresh.expires_at - time.time(), 1),
        )
        return fresh

    def _refresh_token(self, tenant: str, provider: str, record: TokenRecord) -> SecretStr | None:
        if self.tenants.providers[provider].grant_type != "refresh_token":
            return None
        seeded = self.tenants.credentials(tenant, provider).refresh_token
        token = record.refresh_token or seeded
        if token is None:
            raise TokenRequestError(
                "no_refresh_token",
                "no refresh token stored or configured (set refresh_token in the tenants file)",
                permanent=True,
            )
        return token

    def _fresh_record(self, current: TokenRecord, issued: IssuedToken, trigger: str) -> TokenRecord:
        lifetime = issued.expires_at - issued.issued_at
        share = self.policy.refresh_at - random.uniform(0.0, self.policy.jitter)
        grant = self.tenants.providers[current.provider].grant_type
        return TokenRecord(
            tenant=current.tenant,
            provider=current.provider,
            generation=current.generation + 1,
            access_token=issued.access_token,
            refresh_token=issued.refresh_token,
            token_type=issued.token_type,
            issued_at=issued.issued_at,
            expires_at=issued.expires_at,
            refresh_due_at=issued.issued_at + lifetime * share,
            last_refresh_at=time.time(),
            last_refresh_how=f"{grant} ({trigger})",
        )

    async def _put_with_retry(self, record: TokenRecord, fence: int) -> bool:
        # With refresh-token rotation the old refresh token is already spent: losing this write would lose
        # the tenant's grant, so keep trying through a Redis outage for as long as the lock lasts (the
        # fence still refuses the write if a newer refresh got in first).
        deadline = time.monotonic() + self.policy.lock_timeout
        failures = 0
        while True:
            try:
                return await self.store.put(record, fence)
            except RedisError:
                failures += 1
                if time.monotonic() >= deadline:
                    raise
                if failures == 1:
                    pair = {"tenant": record.tenant, "provider": record.provider}
                    log.warning("storing the new token failed; retrying until redis is back", **pair)
                await asyncio.sleep(min(2.0, 0.1 * 2 ** (failures - 1)))

    async def _record_failure(self, current: TokenRecord, fence: int, exc: TokenRequestError) -> TokenRecord:
        now = time.time()
        failures = current.failures + 1
        if exc.permanent:
            delay = self.policy.permanent_pause
        else:
            delay = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (failures - 1))
            delay *= random.uniform(0.5, 1.0)
        failed = current.replace(
            last_error=str(exc),
            last_error_at=now,
            error_kind="permanent" if exc.permanent else "transient",
            failures=failures,
            next_attempt_at=now + delay,
        )
        await self.store.put(failed, fence)
        TOKEN_REFRESH_FAILURES.labels(current.tenant, current.provider, exc.reason).inc()
        events.emit(
            self.store.redis, "token", "failed", tenant=current.tenant, provider=current.provider, reason=exc.reason
        )
        log.warning(
            "token refresh failed",
            tenant=current.tenant,
            provider=current.provider,
            reason=exc.reason,
            error=str(exc),
            permanent=exc.permanent,
            retry_in=round(delay, 1),
        )
        return failed
