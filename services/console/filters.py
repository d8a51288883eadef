"""The imports page's query string, checked before anything reaches the database.

Every problem is a 400 naming the parameter and why; unknown parameters are
refused too, so a typo never silently shows unfiltered data.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import orjson
from multidict import MultiMapping

STATUSES = ("queued", "running", "succeeded", "failed", "partially_rejected")
SORTS = {"id": "id", "export_date": "export_date"}
TEXT = ("tenant", "module", "path", "q")
KNOWN = frozenset({*TEXT, "status", "from", "to", "sort", "dir", "after"})


class BadFilter(ValueError):
    """A filter the page cannot use; the message names the parameter."""


@dataclass(frozen=True)
class ImportFilters:
    tenant: str | None = None
    module: str | None = None
    status: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    # The start of the path taken: "fast", "careful", "first load"...
    path: str | None = None
    # Words that must all appear in the error message.
    q: str | None = None
    sort: str = "id"
    descending: bool = True
    after: tuple[Any, int] | None = None

    def query(self, **changes: Any) -> str:
        """This filter as a query string (for links), with ``changes`` applied."""
        f = replace(self, **changes)
        params = {
            "tenant": f.tenant, "module": f.module, "status": f.status, "path": f.path, "q": f.q,
            "from": f.date_from.isoformat() if f.date_from else None,
            "to": f.date_to.isoformat() if f.date_to else None,
            "sort": f.sort if f.sort != "id" else None,
            "dir": None if f.descending else "asc",
            "after": encode_cursor(f.after) if f.after else None,
        }  # fmt: skip
        return urlencode({k: v for k, v in params.items() if v})


def parse(query: MultiMapping[str], max_chars: int) -> ImportFilters:
    unknown = sorted(set(query.keys()) - KNOWN)
    if unknown:
        raise BadFilter(f"unknown filter {unknown[0]!r} (known: {', '.join(sorted(KNOWN))})")
    values: dict[str, str] = {}
    for name in query.keys():
        given = query.getall(name)
        if len(given) > 1:
            raise BadFilter(f"filter {name!r} is given {len(given)} times; give it once")
        value = given[0].strip()
        if len(value) > max_chars:
            raise BadFilter(f"filter {name!r} is longer than {max_chars} characters")
        if "\x00" in value:
            raise BadFilter(f"filter {name!r} contains a NUL character")
        if value:
            values[name] = value
    return _build(values)


def _build(v: dict[str, str]) -> ImportFilters:
    status = v.get("status")
    if status is not None and status not in STATUSES:
        raise BadFilter(f"status {status!r} is not one of: {', '.join(STATUSES)}")
    sort = v.get("sort", "id")
    if sort not in SORTS:
        raise BadFilter(f"sort {sort!r} is not one of: {', '.join(SORTS)}")
    direction = v.get("dir", "desc")
    if direction not in ("asc", "desc"):
        raise BadFilter(f"dir {direction!r} is not asc or desc")
    date_from, date_to = _date(v, "from"), _date(v, "to")
    if date_from and date_to and date_from > date_to:
        raise BadFilter(f"from {date_from} is after to {date_to}")
    return ImportFilters(
        tenant=v.get("tenant"), module=v.get("module"), status=status, date_from=date_from, date_to=date_to,
        path=v.get("path"), q=v.get("q"), sort=sort, descending=direction == "desc",
        after=decode_cursor(v["after"], sort) if "after" in v else None,
    )  # fmt: skip


def _date(values: dict[str, str], name: str) -> dt.date | None:
    if name not in values:
        return None
    try:
        return dt.date.fromisoformat(values[name])
    except ValueError:
        raise BadFilter(f"{name} {values[name]!r} is not a date (YYYY-MM-DD)") from None


def encode_cursor(after: tuple[Any, int]) -> str:
    value = after[0].isoformat() if isinstance(after[0], dt.date) else after[0]
    return base64.urlsafe_b64encode(orjson.dumps([value, after[1]])).decode().rstrip("=")


def decode_cursor(raw: str, sort: str) -> tuple[Any, int]:
    try:
        value, last_id = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(last_id, int) or isinstance(last_id, bool):
            raise ValueError("id")
        if sort == "export_date":
            return dt.date.fromisoformat(value), last_id
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("value")
        return value, last_id
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadFilter("after: not a page cursor this page made (follow the Next link)") from None
