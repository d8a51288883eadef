"""``conduit``: the one command for every process and operator task.

Services are imported inside their commands, so ``conduit tokens status`` does
not pay for the proxy's imports and a broken service cannot break the others.
"""

from __future__ import annotations

import click

from conduit.cli_support import guard, hold_stops


@click.group(context_settings={"help_option_names": ["-h", "--help"]})  # inherited by every subcommand
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
    def run() -> None:
        hold_stops()
        from services.importer.worker import run as run_importer

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


def _register() -> None:
    """Operator command groups live in their own modules, one per area."""
    from conduit.db_cli import migrate_command
    from conduit.imports_cli import imports
    from conduit.queue_cli import queue
    from conduit.scheduler_cli import scheduler
    from conduit.tokens_cli import tokens

    main.add_command(tokens)
    main.add_command(scheduler)
    main.add_command(queue)
    main.add_command(migrate_command)
    main.add_command(imports)


_register()
