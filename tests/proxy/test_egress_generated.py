"""The egress policy against generated targets: whatever it lets through stays under the provider's API base.

Targets are built from the pieces that path-confusion attacks use (dot segments in
every encoding, separators, '@', ';', '?', '#', overlong and full-width dots). For
each one ``upstream_target`` accepts, the URL the proxy would send to is read by
yarl (host and port) and by the most lenient server we can think of, which
decodes percent-encoding until stable, folds Unicode compatibility forms (NFKC,
as IIS and some Java stacks do) and resolves dot segments: it must still be the
upstream's host and inside ``/api``.
"""

from __future__ import annotations

import posixpath
import unicodedata
from urllib.parse import unquote

from hypothesis import example, given, settings
from hypothesis import strategies as st
from yarl import URL

from services.auth_proxy.egress import EgressRefused, upstream_target

PIECES = [
    "/", "a", "b", ".", "..", "%2e", "%2E", "%252e", "%2f", "%5c", "\\", "@", "%40", ";", ";x=1", "?", "#",
    ":", "//", "%00", "%c0%ae", "%ef%bc%8e", "%EF%BC%8E", "．", "%e2%80%a4", "%3f", "%23", "evil.example",
    "%20", "~", "%u002e",
]  # fmt: skip
BASE = "http://up.example:8080/api"

targets = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map(lambda parts: "/" + "".join(parts))


def _lenient_path(url: str) -> str:
    path = url.split("?", 1)[0].split("#", 1)[0]
    for _ in range(4):
        path = unquote(path)
    path = unicodedata.normalize("NFKC", path).replace("\\", "/")
    return posixpath.normpath(path)


@settings(max_examples=500, derandomize=True, database=None, deadline=None)
@given(target=targets)
# Found: a full-width dot (U+FF0E) or one-dot leader (U+2024) pair, percent-encoded, that NFKC folds to '..'.
@example(target="/a/%ef%bc%8e%ef%bc%8e/b")
@example(target="/%EF%BC%8E%EF%BC%8E")
@example(target="/a/%e2%80%a4%e2%80%a4/b")
def test_an_accepted_target_stays_under_the_api_base(target: str) -> None:
    try:
        forwarded = upstream_target(target)
    except EgressRefused:
        return
    url = BASE + forwarded
    parsed = URL(url, encoded=True)
    assert (parsed.host, parsed.port) == ("up.example", 8080), url
    resolved = _lenient_path(url.removeprefix("http://up.example:8080"))
    assert resolved == "/api" or resolved.startswith("/api/"), (target, resolved)
