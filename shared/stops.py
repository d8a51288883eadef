"""SIGTERM and SIGINT held while a service starts, and taken by its event loop once it handles them.

Until a service's loop has its handlers, the default action of SIGTERM kills it (exit status -15, 143 in a
shell, no "stopped" line) and SIGINT raises KeyboardInterrupt wherever it lands; an orchestrator that stops a
pod that is still starting saw either. Held (blocked) instead, a stop waits in the kernel and is delivered the
moment the loop takes them: the service starts, sees it is asked to stop, and stops as it always does.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the proxy's parent and the CLI hold stops without importing asyncio
    import asyncio

STOPS = frozenset({signal.SIGTERM, signal.SIGINT})


def hold() -> None:
    """Block SIGTERM and SIGINT in this thread (a service's main thread: its first act)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)


def take(loop: asyncio.AbstractEventLoop, stop: Callable[[], object]) -> None:
    """Have ``loop`` call ``stop`` on SIGTERM/SIGINT, then let through any that came while held."""
    for signum in STOPS:
        loop.add_signal_handler(signum, stop)
    release()


def release() -> None:
    """Unblock SIGTERM and SIGINT: call it once they are handled."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
