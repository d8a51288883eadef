"""The configuration errors that stop a process at start, apart from what raises them.

`conduit` catches them around every command (``conduit/cli_support.py``); here
they cost nothing to import, where their home modules bring cryptography,
PyYAML and the tenants file's models, which the parent of
``conduit proxy --processes N`` otherwise never loads.
"""

from __future__ import annotations


class ConfigError(Exception):
    """The tenants file cannot be used; the message says where and why."""


class TokenKeyError(Exception):
    """The token key is missing or malformed (the message never contains the key)."""


class ListenError(Exception):
    """A port a process must listen on is taken or not allowed; the message names it and the OS reason."""
