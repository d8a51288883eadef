"""Jinja2 filters the templates use to show times and sizes the way an operator reads them."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any


def ago(at: Any) -> str:
    if at is None:
        return "-"
    seconds = time.time() - (at.timestamp() if isinstance(at, dt.datetime) else float(at))
    return duration(seconds) + " ago" if seconds >= 0 else "in " + duration(-seconds)


def duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def utc(at: Any) -> str:
    if at is None:
        return "-"
    when = at if isinstance(at, dt.datetime) else dt.datetime.fromtimestamp(float(at), dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def number(value: Any) -> str:
    return f"{int(value or 0):,}"


FILTERS = {"ago": ago, "duration": duration, "utc": utc, "number": number}
