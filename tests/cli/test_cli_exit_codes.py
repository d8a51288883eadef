"""`conduit` as an operator runs it: one line and exit code 1 when a store is out of reach or the
configuration is wrong, for every command and every service; `--version`; `-h` everywhere.

Exit codes (docs/operations.md, "Exit codes"): 0 done, 1 could not be done, 2 the command line is wrong.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from pathlib import Path

import click
import orjson
import pytest
from click.testing import CliRunner

from conduit.cli import main
from tests.cli.conftest import unreached_env
from tests.e2e.processes import CONDUIT

# Nothing listens on port 1; the passwords must never be printed.
DOWN = {
    "Redis": ("redis://:hunter2-redis@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
    "PostgreSQL": ("postgresql://conduit:hunter2-pg@127.0.0.1:1/x", "postgresql://conduit:***@127.0.0.1:1/x"),
}
# Every command that talks to a store, and the stores it talks to.
COMMANDS: dict[str, tuple[list[str], set[str]]] = {
    "imports list": (["imports", "list"], {"PostgreSQL"}),
    "imports list --status failed": (["imports", "list", "--status", "failed"], {"PostgreSQL"}),
    "imports show": (["imports", "show", "1"], {"PostgreSQL"}),
    "imports rerun --failed": (["imports", "rerun", "--failed"], {"Redis", "PostgreSQL"}),
    "imports rerun RUN_ID": (["imports", "rerun", "1"], {"Redis", "PostgreSQL"}),
    "imports run": (["imports", "run", "acme", "users", "--no-wait"], {"Redis", "PostgreSQL"}),
    "queue status": (["queue", "status"], {"Redis", "PostgreSQL"}),
    "tokens status": (["tokens", "status"], {"Redis"}),
    "tokens refresh": (["tokens", "refresh", "acme"], {"Redis"}),
    "scheduler plan": (["scheduler", "plan", "--module", "orders"], {"Redis"}),
    "migrate": (["migrate", "--wait", "0"], {"PostgreSQL"}),
}


@pytest.fixture
def env(redis_url: str, server_urls: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return unreached_env(redis_url, server_urls["CONDUIT_DATABASE_URL"], tmp_path)


async def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CONDUIT, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("store", sorted(DOWN))
async def test_a_store_out_of_reach_is_one_line_and_exit_code_1(env: dict[str, str], store: str) -> None:
    """Every command that uses ``store``, with it at a closed port (and the other store up), at once."""
    url, shown = DOWN[store]
    variable = "CONDUIT_REDIS_URL" if store == "Redis" else "CONDUIT_DATABASE_URL"
    commands = {name: args for name, (args, stores) in COMMANDS.items() if store in stores}
    results = await asyncio.gather(*(run({**env, variable: url}, *args) for args in commands.values()))
    wrong = {}
    for name, (code, out, err) in zip(commands, results, strict=True):
        errors = [line for line in err.splitlines() if not line.startswith("{")]  # JSON lines are logs
        one_line = len(errors) == 1 and errors[0].startswith(f"Error: cannot reach {store} at {shown}: ")
        if code != 1 or not one_line or "Traceback" in err or "hunter2" in out + err:
            wrong[name] = (code, err[-600:])
    assert wrong == {}


# worker: the deprecated name; proxy --processes: its children read the tenants file, the parent only settings
@pytest.mark.parametrize("service", ["proxy", "proxy --processes 2", "importer", "worker", "scheduler"])
async def test_every_service_exits_1_on_bad_configuration(env: dict[str, str], tmp_path: Path, service: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {}\ntenants: {}\n")
    command = service.split()
    (code, _, err), (code2, _, err2) = await asyncio.gather(
        run({**env, "CONDUIT_TENANTS_FILE": str(bad)}, *command),
        run({**env, "CONDUIT_REDIS_TIMEOUT": "-1"}, *command),
    )
    assert code == 1 and str(bad) in err and "Traceback" not in err, err
    assert code2 == 1 and "CONDUIT_REDIS_TIMEOUT" in err2 and "Traceback" not in err2, err2
    if "--processes" in command:  # the parent names the child that could not start, and why
        (line,) = [orjson.loads(line) for line in err.splitlines() if '"proxy process' in line]
        assert line["event"] == "proxy process could not start" and str(bad) in line["reason"], err


async def test_the_importer_still_answers_to_its_old_names_and_says_so(env: dict[str, str], tmp_path: Path) -> None:
    """`conduit worker` and CONDUIT_WORKER_* were the importer's names: they still work, each with a warning."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {}\ntenants: {}\n")
    old = {"CONDUIT_TENANTS_FILE": str(bad), "CONDUIT_WORKER_HTTP_PORT": "0", "CONDUIT_WORKER_MAX_JOBS": "0"}
    code, _, err = await run({**env, **old}, "worker")
    # The old name is read: 0 jobs is refused, named as the operator wrote it.
    assert code == 1 and "CONDUIT_WORKER_MAX_JOBS (deprecated: CONDUIT_IMPORTER_MAX_JOBS)" in err, err
    del old["CONDUIT_WORKER_MAX_JOBS"]
    code, _, err = await run({**env, **old}, "worker")
    warnings = [orjson.loads(line) for line in err.splitlines() if line.startswith("{") and "deprecated" in line]
    assert code == 1 and str(bad) in err, err
    assert [(w["event"], w["use"]) for w in warnings] == [
        ("deprecated command", "conduit importer"),
        ("deprecated setting", "CONDUIT_IMPORTER_HTTP_PORT"),
    ]


def test_the_old_command_name_is_not_offered() -> None:
    result = CliRunner().invoke(main, ["--help"], prog_name="conduit")
    assert "  importer " in result.output and "  worker " not in result.output


async def test_a_wrong_command_line_is_exit_code_2(env: dict[str, str]) -> None:
    code, _, err = await run(env, "imports", "list", "--status", "nonsense")
    assert code == 2 and "Usage:" in err


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"], prog_name="conduit")
    assert result.exit_code == 0
    assert result.output.strip() == f"conduit {importlib.metadata.version('conduit')}"


def _commands(group: click.Group, path: list[str]) -> list[list[str]]:
    found = [path]
    context = click.Context(group)
    for name in group.list_commands(context):  # the lazy ones too (conduit/cli.py)
        command = group.get_command(context, name)
        if isinstance(command, click.Group):
            found += _commands(command, [*path, name])
        else:
            found.append([*path, name])
    return found


@pytest.mark.parametrize("path", _commands(main, []), ids=lambda p: " ".join(p) or "conduit")
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_on_every_command(path: list[str], flag: str) -> None:
    result = CliRunner().invoke(main, [*path, flag], prog_name="conduit")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: {' '.join(['conduit', *path])}")
