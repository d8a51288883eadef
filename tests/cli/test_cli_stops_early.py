"""A service command holds SIGTERM/SIGINT (shared/stops.py) before it imports more than click: until then a
stop takes the default action (exit status -15, nothing logged), and that window used to include importing
every command's module (pydantic, asyncio, tabulate...), 0.2 s on an idle node and over a second on a busy one.

What a service had imported when it held them is read in a process that ends at that moment.
"""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from conduit.cli import main

PROBE = r"""
import os, sys
from shared import stops

def hold():
    os.write(1, "\n".join(sorted(sys.modules)).encode())
    os._exit(0)

stops.hold = hold
from conduit.cli import main
main(sys.argv[1:], prog_name="conduit")
"""
# Beyond what `import click` loads: the CLI's two modules and what holding and parsing need.
HELD_WITH = {"conduit", "conduit.cli", "conduit.cli_support", "shared", "shared.stops", "shared.config_errors"}
HELD_WITH |= {"shared.urls", "signal", "locale", "_locale"}


def loaded(*code_and_args: str) -> set[str]:
    ran = subprocess.run([sys.executable, "-c", *code_and_args], capture_output=True, text=True, check=True)
    return set(ran.stdout.split())


@pytest.mark.parametrize("service", ["proxy", "importer", "worker", "scheduler", "console"])
def test_a_service_holds_its_stops_before_it_imports_more_than_click(service: str) -> None:
    own = {"conduit.scheduler_cli"} if service == "scheduler" else set()  # the `scheduler` group's own module
    before = loaded(PROBE, service) - loaded("import click, sys; print('\\n'.join(sys.modules))")
    assert before - own == HELD_WITH


def test_help_lists_every_command_though_they_load_lazily() -> None:
    listed = CliRunner().invoke(main, ["--help"], prog_name="conduit").output.split("Commands:\n")[1]
    names = [line.split()[0] for line in listed.splitlines()]
    context = click.Context(main)
    commands = [main.get_command(context, name) for name in main.list_commands(context)]
    visible = [command.name for command in commands if command is not None and not command.hidden]
    assert names == visible
    assert {"proxy", "importer", "scheduler", "console", "tokens", "imports", "queue", "migrate"} <= set(names)
