"""``conduit``: the one command for every process and operator task.

Services are imported inside their commands, so ``conduit tokens status`` does
not pay for the proxy's imports and a broken service cannot break the others.
The operator command groups load only when they run (or ``--help`` lists them):
a service holds SIGTERM/SIGINT (shared/stops.py) once the interpreter and click
have started, not after importing every command's module (pydantic, asyncio,
tabulate...), which took 0.2 s on an idle node and over a second on a busy one.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from conduit.cli_support import guard, hold_stops


class LazyGroup(click.Group):
    """click's documented lazy group ("Lazily Loading Subcommands"): ``lazy_subcommands`` maps a command's
    name to ``module.attribute``, imported when the command is looked up."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_subcommands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_subcommands:
            return super().get_command(ctx, cmd_name)
        module, attribute = self.lazy_subcommands[cmd_name].rsplit(".", 1)
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), self.lazy_subcommands[cmd_name]
        return command


# Operator command groups live in their own modules, one per area.
@click.group(
    cls=LazyGroup,
    lazy_subcommands={
        "tokens": "conduit.tokens_cli.tokens",
        "scheduler": "conduit.scheduler_cli.scheduler",
        "queue": "conduit.queue_cli.queue",
        "migrate": "conduit.db_cli.migrate_command",
        "imports": "conduit.imports_cli.imports",
    },
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
)
@click.version_option(package_name="conduit", message="%(prog)s %(version)s")
def main() -> None:
    """Conduit: tenant-aware OAuth2 proxy, token refresher and CSV importer for third-party APIs.

    Exit codes: 0 done; 1 could not be done (configuration, a store out of reach, a failed job);
    2 the command line is wrong.
    """


@main.command()
@click.option("--processes", default=1, show_default=True, help="Processes sharing the port (SO_REUSEPORT).")
def proxy(processes: int) -> None:
    """Run the auth proxy."""
    hold_stops()
    from services.auth_proxy.main import main as run

    guard(lambda: run(processes))


@main.command()
def importer() -> None:
    """Run the importer: the import and token refresh jobs, on an arq worker that, unlike the plain `arq`
    command's, lives through Redis outages."""
    _run_importer("importer")


# Deprecated: the importer's name until this release, kept so existing deployments keep starting.
@main.command(hidden=True)
def worker() -> None:
    """Deprecated name of `conduit importer` (logs a warning)."""
    _run_importer("worker")


def _run_importer(command: str) -> None:
    hold_stops()

    def run() -> None:
        from services.importer.worker import run as run_importer  # reads its settings: guarded

        run_importer(command)

    guard(run)


@main.command()
def console() -> None:
    """Run the operations console (live board, imports, tokens, schedules; sign in with a token or OIDC)."""
    hold_stops()
    from services.console.main import main as run

    guard(run)


@main.command("demo-api")
def demo_api() -> None:
    """Run the demo third party (OAuth2 token endpoint and API) that `make run` uses."""
    from demo.app import main as run

    run()
