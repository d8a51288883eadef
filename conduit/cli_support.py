"""Helpers every `conduit` command module shares."""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError

from shared.config_errors import ConfigError, ListenError, TokenKeyError


def guard(action: Any) -> Any:
    """Configuration problems (and a port already taken) end the command with their message, not a traceback."""
    try:
        return action()
    except (ConfigError, TokenKeyError, ListenError) as exc:
        raise click.ClickException(str(exc)) from None
    except ValidationError as exc:
        raise click.ClickException(describe_settings_error(exc)) from None


def describe_settings_error(exc: ValidationError) -> str:
    """Name the environment variable behind each invalid setting (values are not repeated: they may be secret)."""
    lines = ["invalid settings in the environment:"]
    for err in exc.errors(include_url=False, include_input=False):
        field = str(err["loc"][0]) if err["loc"] else "?"
        lines.append(f"  CONDUIT_{field.upper()}: {err['msg']}")
    return "\n".join(lines)
