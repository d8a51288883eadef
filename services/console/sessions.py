"""Signed-in sessions, kept in Redis under a hash of a random cookie value.

Hand-written (about sixty lines) rather than aiohttp-session: a server-side
session is a Redis key with a TTL, the cookie is only a random id, and the CSRF
token lives in the session, so a stolen page never carries anything reusable.

Each record is sealed (``shared.crypto.BoundSealer``, under a key derived from
``CONDUIT_TOKEN_KEY``) with its own Redis key as associated data, and holds its
own expiry. Anyone able to write Redis could otherwise write an admin session
under the hash of a cookie value of their choosing, move a real one there, or
keep one alive by removing its TTL: a record that does not open for the key it
is read from, or has expired, is signed out, and a refused one is deleted, so it
is logged once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from shared.crypto import BoundSealer, RecordUnreadable
from shared.logging import get_logger
from shared.redis_keys import PREFIX

log = get_logger(__name__)

COOKIE = "conduit_console"
Role = Literal["admin", "readonly"]


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    csrf: str
    via: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def _key(session_id: str) -> str:
    return f"{PREFIX}:console:session:{hashlib.sha256(session_id.encode()).hexdigest()}"


class Sessions:
    def __init__(self, redis: Redis, ttl: float, sealer: BoundSealer) -> None:
        self.redis = redis
        self.ttl = int(ttl)
        self.sealer = sealer

    async def create(self, name: str, role: Role, via: str) -> tuple[str, User]:
        session_id = secrets.token_urlsafe(32)
        user = User(name=name, role=role, csrf=secrets.token_urlsafe(32), via=via)
        key = _key(session_id)
        record = orjson.dumps({**asdict(user), "expires": time.time() + self.ttl})
        await self.redis.set(key, self.sealer.seal(record, key.encode()), ex=self.ttl)
        return session_id, user

    async def get(self, session_id: str | None) -> User | None:
        if not session_id or len(session_id) > 100:
            return None
        key = _key(session_id)
        raw = await self.redis.get(key)
        if raw is None:
            return None
        try:
            record = orjson.loads(self.sealer.open(raw, key.encode()))
            user, expires = _user(record)
        except (RecordUnreadable, ValueError, TypeError, KeyError):
            # No session id, key or record in the line: the key is a hash of the cookie, the record may be forged.
            log.warning("console session refused: it does not open for its key (forged, moved, tampered with or "
                        "sealed under another CONDUIT_TOKEN_KEY); signed out")  # fmt: skip
            await self.redis.delete(key)
            return None
        if expires <= time.time():
            await self.redis.delete(key)
            return None
        return user

    async def drop(self, session_id: str | None) -> None:
        if session_id:
            await self.redis.delete(_key(session_id))


def _user(record: Any) -> tuple[User, float]:
    """The user and expiry of an opened record (sealed by us, so only a key mix-up makes it malformed)."""
    fields = {name: record[name] for name in ("name", "role", "csrf", "via")}
    if record["role"] not in ("admin", "readonly") or not all(isinstance(v, str) for v in fields.values()):
        raise ValueError("malformed session record")
    expires = record["expires"]
    if not isinstance(expires, float | int):
        raise ValueError("malformed session record")
    return User(**fields), float(expires)
