"""shared/events.py: events reach Redis, and publishing never waits for or fails on a Redis that is away."""

from __future__ import annotations

import asyncio

import orjson
from redis.asyncio import Redis

from shared import events, redis_keys
from tests.scheduler.fault_proxy import fault_proxy


async def test_an_emitted_event_reaches_the_channel(redis: Redis) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(redis_keys.events(redis))
    await pubsub.get_message(timeout=1)
    events.emit(redis, "job", "queued", job_id="import:acme:users:2024-05-01", tenant="acme")
    async with asyncio.timeout(5):
        message = None
        while message is None:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    event = orjson.loads(message["data"])
    assert (event["topic"], event["event"], event["tenant"]) == ("job", "queued", "acme")
    await pubsub.aclose()


async def test_a_redis_that_never_answers_costs_the_emitter_nothing_and_the_buffer_stays_bounded(
    redis_url: str,
) -> None:
    async with fault_proxy(redis_url) as proxy:
        hung = Redis.from_url(proxy.url)
        await hung.ping()  # a client in use, as the services' are
        proxy.set("swallow_replies")
        dropped = events.EVENTS_DROPPED.labels("buffer_full")._value.get()
        # emit is a plain function: nothing in it can wait. Flood it while the publisher is stuck on Redis.
        for i in range(events.BUFFER + 500):
            events.emit(hung, "import", "progress", rows=i)
        publisher = events.publisher(hung)
        assert publisher is not None and publisher.queue.qsize() <= events.BUFFER
        assert events.EVENTS_DROPPED.labels("buffer_full")._value.get() - dropped >= 499
        # The stuck publish gives up after its timeout and the publisher goes on with the next event.
        stuck_before = events.EVENTS_DROPPED.labels("unreachable")._value.get()
        async with asyncio.timeout(5):
            while events.EVENTS_DROPPED.labels("unreachable")._value.get() == stuck_before:
                await asyncio.sleep(0.05)
        publisher.task.cancel()
        await asyncio.gather(publisher.task, return_exceptions=True)
        await hung.aclose()


async def test_no_redis_at_all_is_not_an_error(unused_tcp_port: int) -> None:
    gone = Redis.from_url(f"redis://127.0.0.1:{unused_tcp_port}/0", socket_connect_timeout=0.2)
    events.emit(gone, "token", "failed", tenant="acme", provider="demo", reason="timeout")
    publisher = events.publisher(gone)
    assert publisher is not None
    await publisher.flush()
    assert publisher.queue.empty() and not publisher.task.done()
    publisher.task.cancel()
    await asyncio.gather(publisher.task, return_exceptions=True)
    events.emit(None, "token", "failed")  # no client: nothing happens
    await gone.aclose()


async def test_import_progress_does_not_wait_for_a_redis_that_never_answers(redis_url: str) -> None:
    """Regression: Progress awaited its publish, so a Redis that took the command and never answered held the import."""
    from services.importer.progress import Progress
    from services.importer.stats import Outcome

    async with fault_proxy(redis_url) as proxy:
        proxy.set("swallow_replies")
        hung = Redis.from_url(proxy.url)  # no socket timeout: a waiting publish would wait for ever
        progress = Progress(hung, 100, run_id=1, tenant="acme", module="users", export_date="2024-05-01")
        async with asyncio.timeout(5):
            await progress.started(1)
            await progress.rows(250)
            await progress.finished("succeeded", Outcome())
        publisher = events.publisher(hung)
        assert publisher is not None
        publisher.task.cancel()
        await asyncio.gather(publisher.task, return_exceptions=True)
        await hung.aclose()


class _SwallowsCancel:
    """A client whose publish, cancelled, returns as if nothing happened (what redis-py sometimes does)."""

    async def publish(self, channel: str, message: bytes) -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return 0
        return 1


def test_the_publisher_ends_with_its_loop_even_when_a_publish_swallows_the_cancel() -> None:
    """Regression: the publisher went back to waiting for events after a swallowed cancel, so asyncio.run
    never returned (`conduit tokens refresh` hung at exit, tests/integration/test_cli_tokens.py)."""
    import threading
    from typing import cast

    async def command() -> None:
        events.emit(cast(Redis, client), "token", "refreshed", tenant="acme", provider="demo")
        await asyncio.sleep(0.05)  # the publish is in flight when the loop ends

    client = _SwallowsCancel()
    thread = threading.Thread(target=asyncio.run, args=(command(),), daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "asyncio.run did not return: the event publisher outlived its cancellation"


async def test_events_of_another_database_on_the_same_server_are_not_heard(redis: Redis, redis_url: str) -> None:
    # Pub/sub is server-wide: before the channel named the database, a console heard every deployment's imports.
    root, _, db = redis_url.rpartition("/")
    other = Redis.from_url(f"{root}/{(int(db) + 1) % 16}")  # publishes only: nothing is written there
    pubsub = redis.pubsub()
    await pubsub.subscribe(redis_keys.events(redis), redis_keys.tokens_changed(redis))
    await pubsub.get_message(timeout=1)
    try:
        # Another database's messages first, then ours: the first message heard must be ours. (Not PUBLISH's
        # receiver count: another test process may lease that other database and listen on it.)
        for channel in (redis_keys.events, redis_keys.tokens_changed):
            await other.publish(channel(other), b"theirs")
            await redis.publish(channel(redis), b"ours")
            async with asyncio.timeout(5):
                message = None
                while message is None:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            assert message["data"] == b"ours", "heard another database's message"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await other.aclose()
