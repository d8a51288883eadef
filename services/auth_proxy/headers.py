"""Which headers cross the proxy, in each direction."""

from __future__ import annotations

import os
import re

from multidict import CIMultiDict, CIMultiDictProxy

from services.auth_proxy.codings import upstream_accept_encoding

# RFC 9110 §7.6.1 hop-by-hop headers, plus the de-facto Proxy-Connection.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The caller's credentials and routing headers never reach the third party.
_CALLER_ONLY = frozenset({"host", "authorization", "cookie", "x-tenant-id", "x-provider", "x-request-id"})
_DROP_UPSTREAM = HOP_BY_HOP | _CALLER_ONLY
# The length is recomputed for what goes back. A cookie the provider sets is a session minted from the
# tenant's token: no use through the proxy (the caller's Cookie never goes upstream), only away from it.
_DROP_DOWNSTREAM = HOP_BY_HOP | {"content-length", "set-cookie", "set-cookie2"}
_ROUTING_VARY = "X-Tenant-ID, X-Provider"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


_ROUTING = {name.lower(): name for name in ("X-Tenant-ID", "X-Provider", "X-Request-ID")}


class AmbiguousHeader(ValueError):
    """A routing header given twice, or with a comma in it: which value counts is not for the proxy to guess."""

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f"the {name} header must be given once, with one value (no comma)")
        self.name = name


def refuse_underscored_routing(headers: CIMultiDictProxy[str]) -> None:
    """AmbiguousHeader for a routing header spelled with '_' for '-' (``X_Tenant_ID``).

    The proxy reads only ``X-Tenant-ID``; CGI, WSGI, PHP and Rack servers read both as
    ``HTTP_X_TENANT_ID``, so the provider would be told another tenant than the token's.
    """
    names = headers.keys()
    if "_" not in "".join(names):  # nearly every request: one join and one search
        return
    for name in names:
        canonical = _ROUTING.get(name.replace("_", "-").lower())
        if canonical is not None and "_" in name:
            raise AmbiguousHeader(canonical, f"a header spelled with '_' for '-' reads as {canonical} to many servers")


def single_value(headers: CIMultiDictProxy[str], name: str) -> str | None:
    """The one value of a header the proxy routes by; None when absent, AmbiguousHeader when not exactly one."""
    values = headers.getall(name, ())
    if not values:
        return None
    if len(values) > 1 or "," in values[0]:
        raise AmbiguousHeader(name)
    return values[0]


def request_id(given: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a new one."""
    # 32 random hex digits, the shape of uuid4().hex at a sixth of its cost.
    return given if given is not None and _REQUEST_ID.match(given) else os.urandom(16).hex()


def _named_in_connection(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    # Every Connection line counts (RFC 9110 §5.3: lines of one field combine as one list).
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(part.strip().lower() for value in values for part in value.split(","))


def _without(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    # Copying whole (in C) and deleting the few present costs less than filtering header by header.
    out = CIMultiDict(headers)
    for names in (drop, _named_in_connection(headers)):
        for name in names:
            if name in out:
                del out[name]
    return out


def upstream_headers(headers: CIMultiDictProxy[str], authorization: str, req_id: str) -> CIMultiDict[str]:
    """The caller's headers minus hop-by-hop and caller-only ones, plus the tenant's token.

    ``Accept-Encoding`` keeps only codings the proxy can undo to mask an echoed token (codings.py).
    """
    out = _without(headers, _DROP_UPSTREAM)
    given = out.getall("Accept-Encoding", None)
    if given is not None or "Range" in out:
        wanted = upstream_accept_encoding(", ".join(given) if given else "", "Range" in out)
        if given is None or len(given) > 1 or given[0] != wanted:
            out["Accept-Encoding"] = wanted
    out["Authorization"] = authorization
    out["X-Request-ID"] = req_id
    return out


def downstream_headers(headers: CIMultiDictProxy[str], req_id: str) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones, tagged with the request id.

    The answer depends on the tenant and provider headers as much as on the URL: ``Vary`` says so
    (RFC 9110 §12.5.5), else an HTTP cache between the callers and the proxy, keyed on the URL,
    would hand one tenant's answer to the next tenant asking for the same path.
    """
    out = _without(headers, _DROP_DOWNSTREAM)
    out.add("Vary", _ROUTING_VARY)
    out["X-Request-ID"] = req_id
    return out
