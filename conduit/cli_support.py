"""Helpers every `conduit` command module shares.

Exit codes, the same for every command and service (docs/operations.md, "Exit codes"): 0 done; 1 it could
not be done (configuration, a store that cannot be reached, a failed job); 2 the command line
itself is wrong (click's usage errors).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from shared.config_errors import ConfigError, ListenError, TokenKeyError
from shared.urls import redact_url

if TYPE_CHECKING:
    from pydantic import ValidationError


class StoreUnreachable(click.ClickException):
    """A store cannot be reached: one line naming it and its URL (password redacted), exit code 1."""

    def __init__(self, store: str, url: str, exc: BaseException) -> None:
        reason = (str(exc).strip().splitlines() or [""])[0][:200].rstrip(".")
        # Drivers sometimes quote the address they dialled; never a password with it.
        password = _password(url)
        if password:
            reason = reason.replace(password, "***")
        detail = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        super().__init__(f"cannot reach {store} at {redact_url(url)}: {detail}")


def guard(action: Any) -> Any:
    """Configuration problems (and a port already taken) end the command with their message, not a traceback."""
    from pydantic import ValidationError  # not at the top: a service holds its stops before pydantic loads
    from pydantic_settings import SettingsError

    try:
        return action()
    except (ConfigError, TokenKeyError, ListenError) as exc:
        raise click.ClickException(str(exc)) from None
    except ValidationError as exc:
        raise click.ClickException(describe_settings_error(exc)) from None
    except SettingsError as exc:
        raise click.ClickException(describe_source_error(exc)) from None


def hold_stops() -> None:
    """A service command's first act: SIGTERM/SIGINT wait until the service handles them (shared/stops.py), from
    before its imports, which take seconds on a busy node."""
    from shared import stops

    stops.hold()


@contextmanager
def reaching_redis(url: str) -> Iterator[None]:
    """Turn "Redis is not there" (refused, timed out, wrong password) into :class:`StoreUnreachable`."""
    from redis.exceptions import ConnectionError, TimeoutError

    try:
        yield
    except (ConnectionError, TimeoutError) as exc:
        raise StoreUnreachable("Redis", url, exc) from None


@contextmanager
def reaching_postgres(url: str) -> Iterator[None]:
    """Turn "PostgreSQL is not there" (refused, timed out, refused login or database) into :class:`StoreUnreachable`."""
    import asyncpg

    from shared.db import UNAVAILABLE

    refused = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)
    try:
        yield
    except (*UNAVAILABLE, *refused) as exc:
        raise StoreUnreachable("PostgreSQL", url, exc) from None


def describe_settings_error(exc: ValidationError) -> str:
    """Name the environment variable behind each invalid setting (values are not repeated: they may be secret)."""
    lines = ["invalid settings in the environment:"]
    for err in exc.errors(include_url=False, include_input=False):
        if not err["loc"]:  # a check across settings: its message names them
            lines.append(f"  {err['msg']}")
            continue
        inside = ".".join(str(part) for part in err["loc"][1:])
        lines.append(f"  {_variable(str(err['loc'][0]))}{f' (at {inside})' if inside else ''}: {err['msg']}")
    return "\n".join(lines)


def describe_source_error(exc: Exception) -> str:
    """A setting pydantic-settings could not even parse (a list or mapping that is not JSON): its variable, no
    value."""
    import re

    field = re.search(r'field "(\w+)"', str(exc))
    where = _variable(field.group(1)) if field else "a setting"
    return f"invalid settings in the environment:\n  {where}: not valid JSON (a list or mapping is written as JSON)"


def _variable(field: str) -> str:
    """The variable the operator set: the importer still reads its old CONDUIT_WORKER_* names."""
    name = f"CONDUIT_{field.upper()}"
    old = name.replace("CONDUIT_IMPORTER_", "CONDUIT_WORKER_", 1)
    if name not in os.environ and old != name and old in os.environ:
        return f"{old} (deprecated: {name})"
    return name


def _password(url: str) -> str | None:
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    return parts.password or query.get("password")
