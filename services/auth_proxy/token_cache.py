"""The proxy's in-process copy of each tenant's token.

Requests read the copy without touching Redis. The copy is replaced when the
store announces a change (pub/sub) or, should that be missed, by one background
reload when it nears expiry; requests keep using the current token meanwhile,
so no moment makes every in-flight request go to Redis at once. Only when there
is no usable token at all does a request wait, on one shared load per pair.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from shared import redis_keys
from shared.crypto import RecordUnreadable
from shared.logging import get_logger
from shared.refresh import RefreshBlocked, Refresher, RefreshFailed
from shared.token_store import TokenRecord, TokenStore

log = get_logger(__name__)

Pair = tuple[str, str]
# Reload the copy in the background once this share of its lifetime has passed
# (the scheduler refreshes at about half, so normally pub/sub got there first).
_RELOAD_AT = 0.75
# In trouble (store down, refresh backing off), look again at most this often.
_RECHECK_INTERVAL = 1.0


class NoToken(Exception):
    """No usable token can be had now; ``retry_after`` is a hint for the caller, in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, round(retry_after))


class TokenCache:
    """Hands out the current token per (tenant, provider); see the module docstring."""

    def __init__(self, store: TokenStore, refresher: Refresher) -> None:
        self._store = store
        self._refresher = refresher
        self._skew = refresher.policy.expiry_skew
        self._records: dict[Pair, TokenRecord] = {}
        self._loads: dict[Pair, asyncio.Task[TokenRecord]] = {}
        self._background: dict[Pair, asyncio.Task[None]] = {}
        self._next_check: dict[Pair, float] = {}

    async def get(self, tenant: str, provider: str) -> TokenRecord:
        """A record with a usable token, or raise :class:`NoToken`."""
        pair = (tenant, provider)
        record = self._records.get(pair)
        now = time.time()
        if record is not None and record.usable(now, self._skew):
            if now >= record.issued_at + record.lifetime * _RELOAD_AT:
                self._reload_soon(pair, now)
            return record
        return await self._shared(pair, lambda: self._load(pair))

    async def rejected(self, record: TokenRecord) -> TokenRecord:
        """The upstream refused this token (401): get a newer one, refreshing at most once everywhere."""
        pair = (record.tenant, record.provider)
        current = self._records.get(pair)
        if current is not None and current.generation > record.generation:
            return current
        return await self._shared(pair, lambda: self._refresh(pair, rejected_generation=record.generation))

    def changed(self, tenant: str, provider: str, generation: int) -> None:
        """The store announced a new record for the pair; fetch it unless we already have it."""
        pair = (tenant, provider)
        current = self._records.get(pair)
        if current is not None and current.generation < generation:
            self._spawn_background(pair, self._reload_from_store(pair))

    def reload_all(self) -> None:
        """After a pub/sub reconnect: messages may have been missed, so read every cached pair again."""
        for pair in list(self._records):
            self._spawn_background(pair, self._reload_from_store(pair))

    def forget(self) -> None:
        for task in [*self._loads.values(), *self._background.values()]:
            task.cancel()

    async def _shared(self, pair: Pair, make: Callable[[], Awaitable[TokenRecord]]) -> TokenRecord:
        task = self._loads.get(pair)
        if task is None:
            task = asyncio.ensure_future(make())
            self._loads[pair] = task
            task.add_done_callback(lambda _: self._loads.pop(pair, None))
        # shield: one caller giving up (client disconnect) must not cancel the others' load.
        return await asyncio.shield(task)

    async def _load(self, pair: Pair, newer_than: int | None = None) -> TokenRecord:
        """The store's record if it is usable (and newer than ``newer_than``), else a refresh."""
        try:
            record = await self._store.get(*pair)
        except RecordUnreadable as exc:
            return self._fallback(pair, str(exc), 1.0)  # says which key and, for a moved record, whose it is
        except (RedisError, OSError) as exc:
            return self._fallback(pair, f"token store unavailable: {type(exc).__name__}", 1.0)
        fresh_enough = record is not None and (newer_than is None or record.generation > newer_than)
        if record is not None and fresh_enough and record.usable(time.time(), self._skew):
            return self._keep(record)
        return await self._refresh(pair)

    async def _refresh(self, pair: Pair, rejected_generation: int | None = None) -> TokenRecord:
        try:
            record = await self._refresher.refresh(
                *pair,
                trigger="upstream_401" if rejected_generation is not None else "on_demand",
                rejected_generation=rejected_generation,
            )
        except (RefreshBlocked, RefreshFailed) as exc:
            retry_at = exc.retry_at if isinstance(exc, RefreshBlocked) else (exc.record.next_attempt_at or 0)
            return self._fallback(pair, str(exc), retry_at - time.time())
        except (RedisError, OSError, RecordUnreadable) as exc:
            return self._fallback(pair, f"token store unavailable: {type(exc).__name__}", 1.0)
        if record is None or not record.usable(time.time(), self._skew):
            return self._fallback(pair, "token endpoint gave no usable token", 1.0)
        return self._keep(record)

    def _fallback(self, pair: Pair, reason: str, retry_after: float) -> TokenRecord:
        # Stale is not expired: while the token still works, keep using it.
        current = self._records.get(pair)
        if current is not None and current.usable(time.time(), self._skew):
            return current
        raise NoToken(f"no valid token for tenant {pair[0]!r} at provider {pair[1]!r}: {reason}", retry_after)

    def _keep(self, record: TokenRecord) -> TokenRecord:
        pair = (record.tenant, record.provider)
        current = self._records.get(pair)
        if current is None or record.generation >= current.generation:
            self._records[pair] = record
            return record
        return current

    def _reload_soon(self, pair: Pair, now: float) -> None:
        if self._next_check.get(pair, 0.0) <= now:
            self._next_check[pair] = now + _RECHECK_INTERVAL
            self._spawn_background(pair, self._background_load(pair))

    async def _background_load(self, pair: Pair) -> None:
        seen = self._records.get(pair)
        try:
            await self._shared(pair, lambda: self._load(pair, newer_than=seen.generation if seen else None))
        except NoToken as exc:
            log.warning("background token reload failed", tenant=pair[0], provider=pair[1], error=str(exc))

    async def _reload_from_store(self, pair: Pair) -> None:
        try:
            record = await self._store.get(*pair)
        except (RedisError, OSError, RecordUnreadable) as exc:
            log.warning("token reload failed", tenant=pair[0], provider=pair[1], error=type(exc).__name__)
            return
        if record is not None and record.access_token is not None:
            self._keep(record)

    def _spawn_background(self, pair: Pair, work: Awaitable[None]) -> None:
        if pair in self._background:
            # One background job per pair is enough; close the extra coroutine unstarted.
            getattr(work, "close", lambda: None)()
            return
        task = asyncio.ensure_future(work)
        self._background[pair] = task
        task.add_done_callback(lambda _: self._background.pop(pair, None))


async def listen_for_changes(cache: TokenCache, store: TokenStore, on_state: Callable[[bool], None]) -> None:
    """Follow the token change channel for ever, reconnecting with backoff; reports connectivity to ``on_state``."""
    delay = 0.1
    this = asyncio.current_task()
    while True:
        try:
            async with store.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(redis_keys.tokens_changed(store.redis))
                on_state(True)
                cache.reload_all()
                delay = 0.1
                while True:
                    # get_message's own timeout, not listen(): a quiet channel must not trip the
                    # client's socket_timeout, which would drop the feed every few seconds.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if this is not None and this.cancelling():
                        # redis-py can turn a cancellation into a quiet timeout in there (its
                        # zero-timeout readiness check); left alone, the feed ran on and the
                        # proxy could not stop.
                        raise asyncio.CancelledError
                    if message is not None:
                        _dispatch(cache, message)
        except (RedisError, OSError) as exc:
            on_state(False)
            log.error("lost the token change feed; reconnecting", error=type(exc).__name__, retry_in=delay)
            await asyncio.sleep(delay)
            # Capped low: /ready stays 503 until the feed is back, so this is how late recovery shows.
            delay = min(delay * 2, 2.0)


def _dispatch(cache: TokenCache, message: dict[str, object]) -> None:
    data = message.get("data")
    if not isinstance(data, bytes):
        return
    try:
        tenant, provider, generation = data.decode().rsplit("/", 2)
        number = int(generation)
    except ValueError:
        # Anyone who can publish on the channel can send this; raised, it ended the feed for good.
        log.warning("token change message ignored: not tenant/provider/generation", size=len(data))
        return
    cache.changed(tenant, provider, number)
