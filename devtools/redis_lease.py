"""Redis database numbers leased for a while, so test sessions and benches on one Redis never flush each other.

A test session and a bench each flush the database they use. Two of them on
one Redis server (two checkouts, ``make test`` beside ``make bench``) would
wipe each other's tokens and arq jobs mid-run. So each takes a lease on its
database number in database 0 (``SET NX`` with a TTL), renews it from a thread
while it runs, and gives it back at the end; a killed holder's lease lapses
within a minute. Hand-written: it is SET NX EX plus a renewing thread;
redis-py's ``Lock`` would need the same thread to outlive its timeout.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterable, Iterator

from redis import Redis
from redis.exceptions import RedisError

LEASE_KEY = "conduit:tests:redis-db:{}"
LEASE_SECONDS = 60


class Leased(Exception):
    """The database asked for is leased by another test session or bench."""


def root_url(url: str) -> str:
    """The server's URL without a database number."""
    base = url.rstrip("/").rsplit("/", 1)
    return base[0] if base[-1].isdigit() else url.rstrip("/")


@contextlib.contextmanager
def lease_first(url: str, candidates: Iterable[int]) -> Iterator[int | None]:
    """Lease the first free database of ``candidates`` on the server at ``url``; yields None when none is free."""
    leases = Redis.from_url(f"{root_url(url)}/0")
    token = secrets.token_hex(8)
    try:
        db = next((n for n in candidates if leases.set(LEASE_KEY.format(n), token, nx=True, ex=LEASE_SECONDS)), None)
        if db is None:
            yield None
            return
        with _renewed(leases, LEASE_KEY.format(db), token):
            yield db
    finally:
        leases.close()


@contextlib.contextmanager
def lease(url: str, db: int) -> Iterator[int]:
    """Lease database ``db``; raises Leased when another holder has it."""
    with lease_first(url, [db]) as got:
        if got is None:
            raise Leased(f"Redis database {db} at {root_url(url)} is in use by a test session or another bench")
        yield got


@contextlib.contextmanager
def _renewed(leases: Redis, key: str, token: str) -> Iterator[None]:
    done = threading.Event()
    renewer = threading.Thread(target=_renew, args=(leases, key, token, done), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
        with contextlib.suppress(RedisError):
            if leases.get(key) == token.encode():
                leases.delete(key)


def _renew(leases: Redis, key: str, token: str, done: threading.Event) -> None:
    while not done.wait(LEASE_SECONDS / 4):
        with contextlib.suppress(RedisError):
            if leases.get(key) == token.encode():
                leases.expire(key, LEASE_SECONDS)
