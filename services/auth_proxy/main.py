"""Running the proxy as a process: logging, one or more worker processes, clean SIGTERM.

With ``--processes N`` the parent only starts (and restarts) the children, passes signals on
and logs. It imports the settings and nothing of the app (aiohttp, Redis, cryptography...):
``serve`` imports those, in each child. That keeps the parent small, and free of
threads, sockets and event loops, which is what makes forking it safe.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.auth_proxy.settings import ProxySettings
from services.auth_proxy.supervisor import supervise
from shared.config_errors import ConfigError, ListenError, TokenKeyError
from shared.stops import STOPS

if TYPE_CHECKING:
    from services.auth_proxy.app import ProxyApp


# Set by a SIGTERM/SIGINT that arrives while the process is still starting (importing, building the app),
# before the event loop's own handlers exist: the default action would kill it without a word (and, under
# ``--processes``, with an exit code the parent cannot tell from a clean stop). It then stops as soon as it can.
_stop_early = False


def _remember_stop(signum: int, _: object) -> None:
    global _stop_early
    _stop_early = True


def serve(settings: ProxySettings, reuse_port: bool = False, ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and drain in-flight requests. ``ready`` is called once
    listening (the supervisor's sign that this process started: an exit before it means it could not)."""
    if threading.current_thread() is threading.main_thread():  # signal.signal refuses other threads (tests)
        for signum in STOPS:
            signal.signal(signum, _remember_stop)
        # Under --processes the supervisor starts this with them blocked, so none is lost before this point.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
    from services.auth_proxy.app import create_app
    from shared.logging import configure_logging, get_logger

    configure_logging(settings.log_level, settings.log_json)
    log = get_logger(__name__)
    try:
        app = create_app(settings)
    except (ConfigError, TokenKeyError) as exc:
        log.error("invalid configuration", error=str(exc))
        # Printed on stderr at exit, with status 1 (docs/operations.md, "Exit codes"); the supervisor logs it too.
        raise SystemExit(f"conduit proxy: {exc}") from None
    log.info("proxy starting", host=settings.proxy_host, port=settings.proxy_port, pid=os.getpid())
    try:
        asyncio.run(_serve(app, reuse_port, ready))
    except ListenError as exc:
        log.error("cannot listen", host=settings.proxy_host, port=settings.proxy_port, error=str(exc))
        raise SystemExit(f"conduit proxy: {exc}") from None
    log.info("proxy stopped", pid=os.getpid())


async def _serve(app: ProxyApp, reuse_port: bool, ready: Callable[[], None] | None) -> None:
    from services.auth_proxy.transport.server import Server

    settings = app.settings
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in STOPS:
        loop.add_signal_handler(signum, stop.set)
    if _stop_early:
        stop.set()
    await app.start()
    try:
        server = Server(app.handle, app.limits)
        await server.listen(settings.proxy_host, settings.proxy_port, reuse_port)
        _settle_gc()
        if ready is not None:
            ready()
        await stop.wait()
        _hold_later_stops()
        await server.shutdown(settings.proxy_shutdown_timeout)
    finally:
        await app.stop()


def _hold_later_stops() -> None:
    """Asked to stop once is enough: a later SIGTERM/SIGINT (Ctrl-C reaches the children of ``--processes``
    both from the terminal and from the parent) would otherwise arrive after ``asyncio.run`` has closed the
    loop and put the default actions back, and kill the process (or raise KeyboardInterrupt) mid-exit."""
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)


def _settle_gc() -> None:
    """Keep the cyclic GC off the long-lived heap and off the request path.

    Every full collection walked all objects made at start (modules, pydantic
    models, the app), a pause that set p99: frozen, they are never scanned
    again. Request garbage is mostly acyclic and goes by reference counting, so
    generation 0 can wait for 20,000 allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def main(processes: int = 1, settings: ProxySettings | None = None) -> None:
    """Run ``processes`` copies sharing the port (SO_REUSEPORT); the parent passes SIGTERM/SIGINT on."""
    if threading.current_thread() is threading.main_thread():
        # Held until serve() or the supervisor handles them: a stop while the settings load is not lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    settings = settings or ProxySettings()
    if processes <= 1:
        serve(settings)
        return
    from shared.logging import configure_logging

    configure_logging(settings.log_level, settings.log_json)  # the parent logs each child that died
    raise SystemExit(supervise(serve, (settings, True), processes))
