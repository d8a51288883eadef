"""Signed-in sessions, kept in Redis under a hash of a random cookie value.

Hand-written (about forty lines) rather than aiohttp-session: a server-side
session is a Redis key with a TTL, the cookie is only a random id, and the CSRF
token lives in the session, so a stolen page never carries anything reusable.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from typing import Literal

import orjson
from redis.asyncio import Redis

from shared.redis_keys import PREFIX

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
    def __init__(self, redis: Redis, ttl: float) -> None:
        self.redis = redis
        self.ttl = int(ttl)

    async def create(self, name: str, role: Role, via: str) -> tuple[str, User]:
        session_id = secrets.token_urlsafe(32)
        user = User(name=name, role=role, csrf=secrets.token_urlsafe(32), via=via)
        await self.redis.set(_key(session_id), orjson.dumps(asdict(user)), ex=self.ttl)
        return session_id, user

    async def get(self, session_id: str | None) -> User | None:
        if not session_id or len(session_id) > 100:
            return None
        raw = await self.redis.get(_key(session_id))
        return User(**orjson.loads(raw)) if raw else None

    async def drop(self, session_id: str | None) -> None:
        if session_id:
            await self.redis.delete(_key(session_id))
