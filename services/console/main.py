"""Running the console as a process: ``conduit console`` (or ``python -m services.console``)."""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web

from services.console.app import create_app
from services.console.settings import ConsoleSettings
from shared import stops
from shared.config_errors import ConfigError, ListenError
from shared.logging import configure_logging, get_logger

log = get_logger(__name__)


async def serve(settings: ConsoleSettings) -> None:
    """Serve until SIGTERM/SIGINT; then stop accepting, close the live streams, and drain."""
    stop = asyncio.Event()
    stops.take(asyncio.get_running_loop(), stop.set)  # first: a stop while it starts ends it as cleanly
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.console_host, settings.console_port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(f"cannot listen on {settings.console_host}:{settings.console_port}: {reason}") from None
    ways = [w for w, on in (("token", settings.console_token is not None), ("oidc", settings.oidc_enabled)) if on]
    log.info("console started", host=settings.console_host, port=settings.console_port, sign_in=", ".join(ways))
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("console stopped")


def main(settings: ConsoleSettings | None = None) -> None:
    stops.hold()  # until serve() handles them (shared/stops.py)
    settings = settings or ConsoleSettings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:
        print(f"conduit console: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
