"""Helpers every `conduit` command module shares."""

from __future__ import annotations

from typing import Any

import click

from shared.crypto import TokenKeyError
from shared.tenants import ConfigError


def guard(action: Any) -> Any:
    """Configuration problems end the command with their message, not a traceback."""
    try:
        return action()
    except (ConfigError, TokenKeyError) as exc:
        raise click.ClickException(str(exc)) from None
