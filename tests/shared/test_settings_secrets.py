"""No value from the environment in a settings error: not in its text, its traceback, nor the line `conduit` prints.

pydantic puts each invalid input in its ValidationError (``input_value=...``), the whole input for a check
across settings (the console's sign-in check), so a traceback (arq's own CLI prints one) showed the token
key, the database password or any secret set beside the one wrong setting.
"""

from __future__ import annotations

import os
import traceback
from typing import Any
from unittest import mock

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError

from conduit.cli_support import describe_settings_error, describe_source_error
from services.auth_proxy.settings import ProxySettings
from services.console.settings import ConsoleSettings
from services.importer.settings import ImporterSettings
from services.scheduler.settings import SchedulerSettings
from shared.db import DatabaseSettings
from shared.settings import CommonSettings, TokenSettings

CLASSES: list[type[BaseSettings]] = [
    CommonSettings,
    TokenSettings,
    DatabaseSettings,
    ProxySettings,
    ImporterSettings,
    SchedulerSettings,
    ConsoleSettings,
]
FIELDS = sorted({(cls.__name__, name) for cls in CLASSES for name in cls.model_fields})
BY_NAME = {cls.__name__: cls for cls in CLASSES}
SECRETS = st.from_regex(r"s3[a-z][A-Za-z0-9_\-+=.~]{12,30}", fullmatch=True)
# How a secret ends up in a setting: as the value, as a URL's password, inside JSON, as a sentinel's password.
SHAPES = st.sampled_from(
    [
        "{s}",
        "redis://:{s}@127.0.0.1:6379/0",
        "http://:{s}@127.0.0.1:6379/0",
        "{s}:@127.0.0.1:6379/0",
        "postgresql://conduit:{s}@127.0.0.1:5432/x",
        '{{"demo": "{s}"}}',
        '{{"demo": {s}}}',
        '[{{"prefix": "{s}", "ttl": 1}}]',
        '["{s}"]',
        "user:{s}@127.0.0.1:26379",
        "127.0.0.1:{s}",
        "[{s}:26379",
        "/nonexistent/{s}",
    ]
)


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(
    secret=SECRETS,
    chosen=st.lists(st.tuples(st.sampled_from(FIELDS), SHAPES), min_size=1, max_size=3),
    signed_in=st.booleans(),
)
@example(secret="s3cr3t-AAAAAAAAAAAA", chosen=[(("CommonSettings", "log_level"), "{s}")], signed_in=True)
@example(
    secret="s3cr3t-AAAAAAAAAAAA",
    chosen=[(("CommonSettings", "redis_sentinels"), "user:{s}@127.0.0.1:26379")],
    signed_in=True,
)
@example(secret="s3cr3t-AAAAAAAAAAAA", chosen=[(("CommonSettings", "redis_url"), "{s}:@h:1/0")], signed_in=True)
@example(secret="s3cr3t-AAAAAAAAAAAA", chosen=[(("ConsoleSettings", "log_json"), "{s}")], signed_in=False)
def test_an_invalid_setting_never_shows_a_value_from_the_environment(
    secret: str, chosen: list[tuple[tuple[str, str], str]], signed_in: bool
) -> None:
    """Some settings made wrong with a secret in them, while every secret setting of the class holds one too."""
    cls = BY_NAME[chosen[0][0][0]]
    env = {
        "CONDUIT_TOKEN_KEY": secret,
        "CONDUIT_TOKEN_KEY_OLD": secret,
        "CONDUIT_REDIS_URL": f"redis://conduit:{secret}@127.0.0.1:6379/0",
        "CONDUIT_DATABASE_URL": f"postgresql://conduit:{secret}@127.0.0.1:5432/x",
        "CONDUIT_CONSOLE_OIDC_CLIENT_SECRET": secret,
        "CONDUIT_CONSOLE_READONLY_TOKEN": f"{secret}-readonly",
    }
    if signed_in:
        env["CONDUIT_CONSOLE_TOKEN"] = f"{secret}-admin"
    for (_, field), shape in chosen:
        env[f"CONDUIT_{field.upper()}"] = shape.format(s=secret)
    try:
        with mock.patch.dict(os.environ, env, clear=True):
            cls()
    except ValidationError as exc:
        assert_secret_kept(secret, exc, describe_settings_error(exc))
    except SettingsError as exc:
        assert_secret_kept(secret, exc, describe_source_error(exc))


def assert_secret_kept(secret: str, exc: Exception, line: str) -> None:
    shown = {"str": str(exc), "repr": repr(exc), "traceback": "".join(traceback.format_exception(exc)), "cli": line}
    assert {where: text for where, text in shown.items() if secret in text} == {}
    assert line.startswith("invalid settings in the environment:\n  ")
    for problem in line.splitlines()[1:]:
        # A setting's own problem names its variable; a check across settings names them in its message.
        assert problem.startswith("  CONDUIT_") or "CONDUIT_" in problem, line


def test_a_setting_that_is_not_json_names_its_variable() -> None:
    with mock.patch.dict(os.environ, {"CONDUIT_IMPORTER_PROVIDER_RATES": '{"demo": s3cr3t'}, clear=True):
        try:
            ImporterSettings()
        except SettingsError as exc:
            message = describe_source_error(exc)
    assert message == (
        "invalid settings in the environment:\n"
        "  CONDUIT_IMPORTER_PROVIDER_RATES: not valid JSON (a list or mapping is written as JSON)"
    )


def test_a_nested_setting_names_where_inside_it() -> None:
    routes: Any = '[{"prefix": "/a", "ttl": 1}, {"prefix": "s3cr3t", "ttl": 1}]'
    with mock.patch.dict(os.environ, {"CONDUIT_PROXY_CACHE_ROUTES": routes}, clear=True):
        try:
            ProxySettings()
        except ValidationError as exc:
            message = describe_settings_error(exc)
    assert message == (
        "invalid settings in the environment:\n"
        "  CONDUIT_PROXY_CACHE_ROUTES (at 1.prefix): String should match pattern '^/'"
    )
