"""A secret written into a tenants or module file by mistake never comes back in the error about the file.

The documented format references secrets (``{env: NAME}``, ``{file: /path}``); an operator who writes one
inline, or a YAML mistake near one, gets an error naming the file, the line and what is wrong, and
nothing of what is written there. Names (tenants, providers, keys) are repeated: they say where. So the
generated files keep the secret out of mapping keys, except where a key may well be the secret: inside a
secret reference (``client_secret: {s3cr3t}``) and a key without a value (``{client_id: acme, s3cr3t}``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from shared.modules import load_catalogue
from shared.tenants import ConfigError, load_tenants

SETTINGS = settings(max_examples=300, derandomize=True, database=None, deadline=None)
# Secret-looking: a lower-case start (so never mistaken for a variable's NAME), then what tokens are made of,
# YAML's special characters included.
SECRETS = st.from_regex(r"s3[a-z][A-Za-z0-9_\-+/=.~:#'\"!&*%@`,\[\]{}|>]{12,30}", fullmatch=True)
# What breaks a YAML file when typed somewhere in it.
BREAKS = st.sampled_from(
    [
        '"',
        "'",
        ": ",
        "\t",
        "[",
        "{",
        "}",
        "]",
        "*",
        "&",
        "!",
        "- ",
        "? ",
        "%",
        "@",
        "`",
        "|",
        ">",
        "\n",
        "\n ",
        "#",
        ",",
        "!!int ",
        "!!float ",
        "!!binary ",
        "!!timestamp ",
        "!!bool ",
        "&a ",
        "*a ",
        "!x ",
        "\x07",
        "\ufeff",
        "\\",
        ":",
        "---\n",
        "...\n",
        "<<: ",
        "\ud800",
        "\x85",
    ]  # fmt: skip
)

TENANTS = """\
providers:
  demo:
    token_url: https://idp.example.com/oauth/token
    api_base_url: https://api.example.com/v1/
    scopes: [read]
tenants:
  acme:
    providers:
      demo:
        client_id: acme
        client_secret: {secret}
"""
GOOD: dict[str, Any] = yaml.safe_load(TENANTS.format(secret="{env: ACME_SECRET}"))
PAIR = ("tenants", "acme", "providers", "demo")
# Every value of the file a secret could be put in by mistake.
PLACES = [
    ("providers", "demo", "token_url"),
    ("providers", "demo", "api_base_url"),
    ("providers", "demo", "grant_type"),
    ("providers", "demo", "scopes"),
    ("providers", "demo", "client_auth_method"),
    ("providers", "demo", "default_expires_in"),
    (*PAIR, "client_id"),
    (*PAIR, "client_secret"),
    (*PAIR, "client_secret", "env"),
    (*PAIR, "client_secret", "file"),
    (*PAIR, "refresh_token"),
    (*PAIR, "refresh_token", "env"),
    (*PAIR, "refresh_token", "file"),
]
SHAPES = st.sampled_from(
    [
        lambda s: s,
        lambda s: {"env": s},
        lambda s: {"file": s},
        lambda s: {s: None},
        lambda s: {"env": "ACME_SECRET", s: 1},
        lambda s: {"value": s},
        lambda s: [s],
        lambda s: {"env": s, "file": s},
        lambda s: f"https://acme:{s}@idp.example.com/oauth/token",
        lambda s: f"{s}:x@idp.example.com",
    ]
)


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:  # hypothesis runs many files per test: no function fixture
        yield Path(name)


def leaked(secret: str, message: str) -> bool:
    """Any 8 characters running of the secret in the message: a cut secret is still a leak."""
    return any(secret[i : i + 8] in message for i in range(len(secret) - 7))


def keys_outside_secret_refs(data: object, parent: object = None) -> Iterator[str]:
    """Keys with a value outside secret references: names, which errors repeat."""
    if isinstance(data, dict):
        for key, value in data.items():
            if parent not in ("client_secret", "refresh_token") and value is not None:
                yield str(key)
            yield from keys_outside_secret_refs(value, key)
    elif isinstance(data, list):
        for item in data:
            yield from keys_outside_secret_refs(item, parent)


def secret_is_a_name(text: str, secret: str) -> bool:
    """The broken file still parses and the secret became a key (a name, which errors repeat)."""
    try:
        data = yaml.safe_load(text)
    except Exception:
        return False
    return any(leaked(secret, key) for key in keys_outside_secret_refs(data))


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_tenants(path)
    return str(caught.value)


@SETTINGS
@given(
    secret=SECRETS,
    quote=st.sampled_from(["", '"', "'"]),
    breaks=st.lists(st.tuples(BREAKS, st.floats(0, 1)), min_size=0, max_size=3),
    cut=st.none() | st.floats(0, 1),
)
@example(secret="s3cr3t-AAAAAAAAAAAA", quote='"', breaks=[], cut=0.98)  # an unterminated quoted secret
@example(secret="s3cr3t-AAAAAAAAAAAA", quote="", breaks=[("\t", 0.965)], cut=None)
@example(secret="s3cr3t-AAAAAAAAAAAA", quote="", breaks=[("!!int ", 0.93)], cut=None)
def test_a_broken_tenants_file_never_repeats_an_inline_secret(
    home: Path, secret: str, quote: str, breaks: list[tuple[str, float]], cut: float | None
) -> None:
    """The secret written inline (the mistake the format's references are there to avoid), then the file
    broken where a careless edit breaks it: characters typed anywhere, a line cut short."""
    text = TENANTS.format(secret=f"{quote}{secret}{quote}")
    for fragment, where in breaks:
        at = round(where * len(text))
        text = text[:at] + fragment + text[at:]
    if cut is not None:
        text = text[: round(cut * len(text))]
    assume(not secret_is_a_name(text, secret))
    path = home / "tenants.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    message = load_error(path)
    assert not leaked(secret, message), message
    assert str(path) in message
    assert "line " in message or _empty(text), message


def _empty(text: str) -> bool:
    try:
        return yaml.compose(text) is None  # nothing but comments: no line to name
    except yaml.YAMLError:
        return False


# Mappings where a secret may be written as a key without a value, the way `{s3cr3t}` reads in YAML.
BARE = [
    (),
    ("providers",),
    ("providers", "demo"),
    ("tenants",),
    ("tenants", "acme"),
    ("tenants", "acme", "providers"),
    PAIR,
]


@SETTINGS
@given(
    secret=SECRETS,
    placed=st.lists(st.tuples(st.sampled_from(PLACES), SHAPES), min_size=0, max_size=3),
    bare=st.lists(st.sampled_from(BARE), max_size=2),
)
@example(secret="s3cr3t-AAAAAAAAAAAA", placed=[], bare=[PAIR])
@example(secret="s3cr3t-AAAAAAAAAAAA", placed=[((*PAIR, "client_secret", "env"), lambda s: s)], bare=[])
@example(secret="s3cr3t-AAAAAAAAAAAA", placed=[((*PAIR, "client_secret"), lambda s: {s: None})], bare=[])
@example(secret="s3cr3t-AAAAAAAAAAAA", placed=[((*PAIR, "client_secret", "file"), lambda s: s)], bare=[])
def test_a_secret_in_any_value_of_the_tenants_file_is_never_repeated(
    home: Path, secret: str, placed: list[tuple[tuple[str, ...], Any]], bare: list[tuple[str, ...]]
) -> None:
    """Wrong types, unknown keys inside a secret reference, a secret where a variable's name or a file's path
    belongs: every error names the file, the tenant or provider, the key and the line, never the value."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for place, shape in placed:
        _put(data, place, shape(secret))
    for place in bare:
        _put(data, (*place, secret), None)
    path = home / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_tenants(path)
    except ConfigError as exc:
        message = str(exc)
    else:
        return  # every value placed was valid where it was put (a URL with a password is one)
    assert not leaked(secret, message), message
    assert message.startswith(f"{path}: invalid tenants file\n")
    for line in message.splitlines()[1:]:
        assert line.startswith(("  tenant 'acme'", "  provider 'demo'", "  key '")) and "(line " in line, message


def _put(data: dict[str, Any], place: tuple[str, ...], value: object) -> None:
    *parents, last = place
    for key in parents:
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data = data[key]
    data[last] = value


MODULE = """\
name: m
description: {secret}
key: [id]
columns:
  - {{name: id, type: bigint}}
"""


@SETTINGS
@given(secret=SECRETS, breaks=st.lists(st.tuples(BREAKS, st.floats(0, 1)), min_size=1, max_size=3))
@example(secret="s3cr3t-AAAAAAAAAAAA", breaks=[(": ", 0.5)])
def test_a_broken_module_definition_never_repeats_its_content(
    home: Path, secret: str, breaks: list[tuple[str, float]]
) -> None:
    text = MODULE.format(secret=secret)
    for fragment, where in breaks:
        at = round(where * len(text))
        text = text[:at] + fragment + text[at:]
    assume(not secret_is_a_name(text, secret))
    folder = home / "modules"
    folder.mkdir(exist_ok=True)
    path = folder / "m.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_catalogue(folder)
    except ConfigError as exc:
        message = str(exc)
    else:
        return  # the break was harmless (a comment, a second space...)
    assert not leaked(secret, message), message
    assert str(path) in message


def test_a_yaml_error_names_the_line_and_column_and_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS.format(secret='"s3cr3t-never-shown'))
    message = load_error(path)
    assert message == (
        f"{path}, line 12, column 1: not valid YAML: while scanning a quoted scalar started at line 11, "
        "column 24: found unexpected end of stream"
    )


def test_a_value_its_tag_cannot_convert_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    """PyYAML raised a bare ValueError repeating the value (a traceback, past every handler)."""
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS.format(secret="!!int s3cr3t-never-shown"))
    assert load_error(path) == f"{path}, line 11, column 24: not valid YAML: the value cannot be read as int"


def test_a_file_that_is_not_utf8_is_a_config_error_at_its_byte(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_bytes(TENANTS.format(secret="s3cr3t\xff").encode("latin-1"))
    assert load_error(path) == f"{path}, line 11, column 30: the tenants file is not UTF-8"


def test_a_variable_name_is_still_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_SECRET", raising=False)
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS.format(secret="{env: ACME_SECRET}"))
    assert load_error(path).endswith(
        "tenant 'acme', key 'providers.demo.client_secret' (line 11, column 24): "
        "environment variable ACME_SECRET is not set or empty"
    )
