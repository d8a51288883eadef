"""`conduit` as an operator runs it, with a secret where it does not belong: the error line and the logs name the
file and line (or the variable), exit code 1, no traceback, and never the secret.

tests/shared/test_config_secrets.py and test_settings_secrets.py generate the cases; these run a few through
the real entry point, the supervisor of ``proxy --processes 2`` (which repeats a child's reason) included.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cli.conftest import unreached_env
from tests.e2e.processes import CONDUIT

SECRET = "s3cr3t-Zx9_never-printed"
SERVICES = ["proxy", "proxy --processes 2", "importer", "scheduler", "tokens status"]


@pytest.fixture
def env(redis_url: str, server_urls: dict[str, str], tmp_path: Path) -> dict[str, str]:
    ports = {"CONDUIT_PROXY_PORT": "0", "CONDUIT_IMPORTER_HTTP_PORT": "0", "CONDUIT_SCHEDULER_HTTP_PORT": "0"}
    return unreached_env(redis_url, server_urls["CONDUIT_DATABASE_URL"], tmp_path, **ports)


async def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        CONDUIT, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    except TimeoutError:  # it started after all: not left running
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()  # logs go to either: the secret to neither


async def run_all(env: dict[str, str], commands: list[str]) -> dict[str, tuple[int, str]]:
    results = await asyncio.gather(*(run(env, *command.split()) for command in commands))
    return dict(zip(commands, results, strict=True))


def wrong(results: dict[str, tuple[int, str]], *expected: str) -> dict[str, str]:
    """Each command that did not exit 1 with every expected text and neither the secret nor a traceback."""
    return {
        command: output[-800:]
        for command, (code, output) in results.items()
        if code != 1 or SECRET in output or "Traceback" in output or not all(e in output for e in expected)
    }


@pytest.mark.parametrize(
    ("value", "where", "commands"),
    [
        (f'"{SECRET}', "line 4, column 1: not valid YAML", SERVICES),
        (f"!!int {SECRET}", "line 3, column 61: not valid YAML: the value cannot be read as int", SERVICES),
        (f"{{{SECRET}}}", "(line 3, column 61): unknown key (only 'env' or 'file')", SERVICES),
        # The scheduler and `tokens status` never read a secret: they start.
        (f"{{env: {SECRET}}}", "(line 3, column 61): environment variable (named at", ["proxy", "importer"]),
    ],
    ids=["unterminated quote", "a tag", "a mapping", "a variable's place"],
)
async def test_a_secret_in_the_tenants_file_is_never_printed(
    env: dict[str, str], tmp_path: Path, value: str, where: str, commands: list[str]
) -> None:
    path = tmp_path / "inline.yaml"
    path.write_text(
        "providers: {demo: {token_url: 'http://127.0.0.1:9/t', api_base_url: 'http://127.0.0.1:9/'}}\n"
        "tenants:\n"
        f"  acme: {{providers: {{demo: {{client_id: acme, client_secret: {value}}}}}}}\n"
    )
    results = await run_all({**env, "CONDUIT_TENANTS_FILE": str(path)}, commands)
    assert wrong(results, str(path), where) == {}


@pytest.mark.parametrize(
    ("variable", "value", "commands"),
    [
        ("CONDUIT_REDIS_SENTINELS", f"conduit:{SECRET}@127.0.0.1:26379", [*SERVICES, "console", "migrate"]),
        ("CONDUIT_LOG_LEVEL", SECRET, [*SERVICES, "console", "migrate"]),
        ("CONDUIT_REDIS_URL", f"{SECRET}:@127.0.0.1:6379/0", [*SERVICES, "console", "migrate"]),
        # Read by the processes that talk to PostgreSQL; asyncpg's own error repeated the would-be scheme.
        ("CONDUIT_DATABASE_URL", f"{SECRET}:@127.0.0.1:5432/x", ["importer", "console", "queue status", "migrate"]),
    ],
)
async def test_a_secret_in_the_environment_is_never_printed(
    env: dict[str, str], variable: str, value: str, commands: list[str]
) -> None:
    """One setting wrong (with a secret in it), secrets set beside it: only the wrong one's name is printed."""
    secrets = {
        "CONDUIT_DATABASE_URL": f"postgresql://conduit:{SECRET}@127.0.0.1:5432/x",
        "CONDUIT_CONSOLE_OIDC_CLIENT_SECRET": SECRET,
    }
    results = await run_all({**env, **secrets, variable: value}, commands)
    assert wrong(results, f"{variable}: ") == {}


async def test_a_check_across_settings_prints_none_of_them(env: dict[str, str]) -> None:
    """The console with no way to sign in: pydantic's error held every setting it was given."""
    secrets = {"CONDUIT_DATABASE_URL": f"postgresql://conduit:{SECRET}@127.0.0.1:5432/x", "CONDUIT_TOKEN_KEY": SECRET}
    results = await run_all({**env, **secrets, "CONDUIT_CONSOLE_OIDC_CLIENT_SECRET": SECRET}, ["console"])
    assert wrong(results, "the console needs a way to sign in") == {}


async def test_a_setting_that_is_not_json_is_one_line(env: dict[str, str]) -> None:
    results = await run_all({**env, "CONDUIT_IMPORTER_PROVIDER_RATES": f'{{"demo": {SECRET}'}, ["importer"])
    assert wrong(results, "CONDUIT_IMPORTER_PROVIDER_RATES: not valid JSON") == {}
