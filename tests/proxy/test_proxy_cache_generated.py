"""The response cache, differentially: every answer is what the upstream says to *this* request.

Generated sequences of requests (two tenants, two providers, spellings of a few
paths, Accept lines, a header the upstream may Vary on, Range, bodies, the
caller's Cache-Control) go over real HTTP to a proxy caching ``/echo-cache/``,
in front of upstreams whose answers echo everything they depend on (the token's
client, method, target, body, Range, Accept, Accept-Encoding and each header
their ``Vary`` names) and carry a nonce per upstream call. The upstreams' cache
headers are drawn per path: Cache-Control and Vary over one or two lines,
Set-Cookie, Expires in the past.

Each answer must then echo this very request, whether it came from the cache or
not; and an answer served without an upstream call must come from a response
that a shared cache (RFC 9111) may store, to a request it may store, for a
request it may answer from the cache. Anything else is an answer meant for
another tenant, provider, query, Accept, Range or caller.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from email.utils import formatdate
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from redis.asyncio import Redis
from yarl import URL

from services.auth_proxy.response_cache import storable_ttl
from tests.proxy.conftest import Proxy
from tests.third_party import ThirdParty, echo_of, running_third_party

PATHS = ["/echo-cache/a", "/echo-cache/b"]
# Spellings the upstream reads as the same path, or the same query, but receives differently (an empty
# query, which yarl drops, is in test_proxy_cache_hostile.py's raw bytes).
SPELLINGS = {
    "/echo-cache/a": ["/echo-cache/a", "/echo-cache/%61", "/echo-cache/a?q=1", "/echo-cache/a?q=%31"],
    "/echo-cache/b": ["/echo-cache/b", "/echo-cache/b?q=1"],
}
CACHE_CONTROL = [
    [],
    ["max-age=60"],
    ["private, max-age=60"],
    ["max-age=60", "no-store"],
    ["public", "no-cache"],
    ["max-age=0"],
    ["s-maxage=0, max-age=60"],
    ["max-age=-1"],
    ['no-cache="Set-Cookie"'],
]
VARY = [[], ["Accept"], ["Accept-Encoding, Accept"], ["Accept", "X-Sub"], ["accept, x-sub"], ["*"]]
EXPIRES = [None, "0", "Thu, 01 Jan 1970 00:00:00 GMT"]
LINES = [[], ["application/json"], ["application/json", "text/csv"], ["application/json, text/csv"]]


@st.composite
def profiles(draw: st.DrawFn) -> list[tuple[str, str]]:
    # Each part is half the time its cacheable default, so that whole profiles are often cacheable.
    lines = [("Cache-Control", v) for v in draw(st.one_of(st.just(["max-age=60"]), st.sampled_from(CACHE_CONTROL)))]
    lines += [("Vary", v) for v in draw(st.one_of(st.just([]), st.sampled_from(VARY)))]
    if draw(st.sampled_from([False, False, False, True])):
        lines.append(("Set-Cookie", "session=1"))
    expires = draw(st.one_of(st.none(), st.sampled_from(EXPIRES)))
    if expires is not None:
        lines.append(("Expires", expires))
    return lines


@dataclass(frozen=True)
class Call:
    tenant: str
    provider: str
    path: str
    target: str
    accept: tuple[str, ...]
    encoding: tuple[str, ...]
    sub: tuple[str, ...]
    range: str | None
    body: bytes | None
    caller_cache_control: str | None

    def headers(self) -> CIMultiDict[str]:
        headers = CIMultiDict[str]([("X-Tenant-ID", self.tenant), ("X-Provider", self.provider)])
        headers.extend([("Accept", v) for v in self.accept])
        headers.extend([("Accept-Encoding", v) for v in self.encoding])
        headers.extend([("X-Sub", v) for v in self.sub])
        if self.range is not None:
            headers["Range"] = self.range
        if self.caller_cache_control is not None:
            headers["Cache-Control"] = self.caller_cache_control
        return headers

    def sent_upstream(self) -> CIMultiDict[str]:
        """The headers as the upstream gets them: ``Accept-Encoding`` keeps only codings the proxy can undo to
        mask an echoed token, and a range asks for ``identity`` (codings.py)."""
        headers = self.headers()
        if self.encoding or self.range is not None:
            kept = [c.strip() for line in self.encoding for c in line.split(",") if c.strip() in ("gzip", "deflate")]
            headers["Accept-Encoding"] = ", ".join(kept) if kept and self.range is None else "identity"
        return headers

    def may_use_cache(self) -> bool:
        return self.body is None and self.range is None and self.caller_cache_control is None


CHOICES: dict[str, list[Any]] = {
    "tenant": ["acme", "globex"],
    "provider": ["demo", "other"],
    "accept": [tuple(v) for v in LINES],
    "encoding": [(), ("gzip",), ("gzip", "br"), ("gzip, br",)],
    "sub": [(), ("1",), ("2",), ("1", "2")],
    "range": [None, "bytes=0-3"],
    "body": [None, b"x"],
    "caller_cache_control": [None, "no-cache"],
}


@st.composite
def sequences(draw: st.DrawFn) -> list[Call]:
    """Requests that each differ from the one before in one thing at most: near misses are where keys collide."""
    path = draw(st.sampled_from(PATHS))
    call = Call(path=path, target=path, **{name: values[0] for name, values in CHOICES.items()})
    out = [call]
    for _ in range(draw(st.integers(1, 7))):
        name = draw(st.sampled_from(["same", "target", *CHOICES]))
        if name == "target":
            path = draw(st.sampled_from(PATHS))
            call = replace(call, path=path, target=draw(st.sampled_from(SPELLINGS[path])))
        elif name != "same":
            call = replace(call, **{name: draw(st.sampled_from(CHOICES[name]))})
        out.append(call)
    return out


def storable(profile: list[tuple[str, str]]) -> bool:
    """What RFC 9111 lets a shared cache store and serve fresh, for the profiles drawn above."""
    names = {k.lower() for k, _ in profile}
    control = {d.strip().split("=")[0].lower() for k, v in profile if k == "Cache-Control" for d in v.split(",")}
    ages = {d.strip() for k, v in profile if k == "Cache-Control" for d in v.split(",") if "max-age" in d}
    vary = {n.strip().lower() for k, v in profile if k == "Vary" for n in v.split(",")}
    if "set-cookie" in names or control & {"no-store", "no-cache"} or not vary <= {"accept", "accept-encoding"}:
        return False
    if ages:
        return all(a.split("=")[1].isdigit() and int(a.split("=")[1]) > 0 for a in ages)
    # No max-age: Expires in the past, or invalid ("0"), means already stale (RFC 9111 §5.3).
    return "expires" not in names


class Upstreams:
    def __init__(self, proxy: Proxy, other: ThirdParty) -> None:
        self.proxy, self.other = proxy, other

    def __repr__(self) -> str:
        return "Upstreams(...)"  # hypothesis prints the arguments of a failing example; the call logs are long

    def call_count(self) -> int:
        return len(self.proxy.party.api_calls) + len(self.other.api_calls)


@pytest.fixture
async def upstreams(start_proxy: Callable[..., Any], party: ThirdParty) -> AsyncIterator[Upstreams]:
    routes = [{"prefix": "/echo-cache/", "ttl": 30}]
    async with (
        running_third_party(lifetime=60) as other,
        start_proxy(party, extra={"other": other}, proxy_cache_enabled=True, proxy_cache_routes=routes) as proxy,
    ):
        yield Upstreams(proxy, other)


async def _send(up: Upstreams, call: Call) -> tuple[int, dict[str, Any], CIMultiDict[str]]:
    response = await up.proxy.session.request(
        "GET",
        URL(up.proxy.url + call.target, encoded=True),  # as spelled: yarl would decode %61
        headers=call.headers(),
        data=call.body,
        skip_auto_headers=("Accept", "Accept-Encoding", "Content-Type"),
    )
    async with response:
        return response.status, orjson.loads(await response.read()), CIMultiDict(response.headers)


def _a(**changes: Any) -> Call:
    base = Call(path=PATHS[0], target=PATHS[0], **{name: values[0] for name, values in CHOICES.items()})
    return replace(base, **changes)


def _profiles(*lines: tuple[str, str]) -> dict[str, list[tuple[str, str]]]:
    return {PATHS[0]: list(lines), PATHS[1]: []}


STORED = ("Cache-Control", "max-age=60")


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    profile_of=st.fixed_dictionaries({p: profiles() for p in PATHS}),
    sequence=sequences(),
)
# What this test found at e6b0bd9: a GET with a body answered from the entry of a GET without one ...
@example(profile_of=_profiles(STORED), sequence=[_a(), _a(body=b"x")])
# ... a Range request answered with the whole 200 ...
@example(profile_of=_profiles(STORED), sequence=[_a(), _a(range="bytes=0-3")])
# ... a second Accept line unseen by the key ...
@example(profile_of=_profiles(STORED), sequence=[_a(accept=("application/json",)), _a(accept=LINES[2])])
# ... a second Vary or Cache-Control line unseen, and an Expires of 0 read as no Expires.
@example(profile_of=_profiles(STORED, ("Vary", "Accept"), ("Vary", "X-Sub")), sequence=[_a(sub=("1",)), _a(sub=("2",))])
@example(profile_of=_profiles(STORED, ("Cache-Control", "no-store")), sequence=[_a(), _a()])
@example(profile_of=_profiles(("Expires", "0")), sequence=[_a(), _a()])
async def test_every_answer_is_the_upstreams_answer_to_this_request(
    upstreams: Upstreams, redis: Redis, profile_of: dict[str, list[tuple[str, str]]], sequence: list[Call]
) -> None:
    for key in await redis.keys("conduit:cache:*"):
        await redis.delete(key)
    for party in (upstreams.proxy.party, upstreams.other):
        party.cache_profiles.clear()
        party.cache_profiles.update(profile_of)
    origin: dict[str, Call] = {}
    for call in sequence:
        before = upstreams.call_count()
        status, answer, headers = await _send(upstreams, call)
        nonce = answer.pop("nonce")
        profile = profile_of[call.path]
        expected = echo_of(
            f"{call.tenant}-{call.provider}",
            "GET",
            "/api" + call.target,
            call.body or b"",
            call.sent_upstream(),
            profile,
        )
        assert (status, answer) == (206 if call.range else 200, expected), f"answered {nonce}, meant for another"
        if upstreams.call_count() > before:
            origin[nonce] = call
            continue
        # Served by the cache: by a request that may use it, from a response it may keep, to a request it may keep.
        assert "Set-Cookie" not in headers
        assert call.may_use_cache(), f"{call} must go upstream"
        assert storable(profile), f"{profile} must not be stored"
        assert origin[nonce].may_use_cache(), f"the answer to {origin[nonce]} must not be stored"


@pytest.mark.parametrize(
    ("lines", "ttl"),
    [
        # {soon}: a date 100 s ahead, made when the case runs (collection can come minutes before).
        ([("Expires", "{soon} GMT")], 30.0),
        ([("Expires", "{soon} -0000")], 30.0),  # no zone: still GMT, not the machine's local time
        ([("Expires", "{soon} GMT"), ("Cache-Control", "max-age=5")], 5.0),
        ([("Cache-Control", 'max-age="10"')], 10.0),
        ([("Cache-Control", "public, s-maxage=7, max-age=0")], 7.0),
        ([("Cache-Control", "max-age=-1")], None),
        ([("Cache-Control", "max-age")], None),
        ([("Cache-Control", "max-age=60"), ("Cache-Control", "No-Store")], None),
        ([("Vary", "Accept"), ("Vary", "Cookie")], None),
    ],
)
def test_how_long_a_response_may_be_kept(lines: list[tuple[str, str]], ttl: float | None) -> None:
    soon = formatdate(time.time() + 100, usegmt=True).removesuffix(" GMT")
    lines = [(k, v.replace("{soon}", soon)) for k, v in lines]
    assert storable_ttl(200, CIMultiDict(lines), 30.0) == ttl
