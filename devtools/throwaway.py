"""Start, find again and discard throwaway Redis and PostgreSQL servers, each living in one directory.

The servers daemonize (redis `--daemonize`, `pg_ctl start`), so they outlive the process that started
them and `ensure` can hand them to `make run`; `server.json` in their directory records how to find them.

PostgreSQL refuses to run as root, so as root it runs as an unprivileged user. Where that user cannot
reach the server's directory (a clone under a 0700 directory), its files go to a private directory
under the system's temporary directory instead, named in `elsewhere` in the server's directory and
deleted with it; no mode outside the clone is ever changed.
"""

from __future__ import annotations

import dataclasses
import json
import pwd
import shlex
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg

from devtools import processes, server_binaries
from devtools.probes import redis_reachable, run_sync
from devtools.server_binaries import ServerError

RECORD = "server.json"
# Names the directory outside `home` where a server keeps its files, when it cannot keep them in `home`.
ELSEWHERE = "elsewhere"
DATABASE = "conduit"
_READY_TIMEOUT = 15.0


@dataclass(frozen=True)
class Server:
    """A running throwaway server as recorded in its directory."""

    url: str
    pid: int
    source: str
    # Part of the server's command line: a pid reused after a reboot must not be taken for our server.
    marker: str
    stop_signal: int


def load(home: Path) -> Server | None:
    """The server recorded in `home` if it is still running, else None."""
    try:
        server = Server(**json.loads((home / RECORD).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    # PostgreSQL's marker is its data directory, whose postmaster.pid names the running postmaster:
    # after a `pg_ctl restart` (tests/importer/test_faults.py) the recorded pid is gone, the server is not.
    current = _read_pid(Path(server.marker) / "postmaster.pid") if Path(server.marker).is_absolute() else None
    if current is not None and current != server.pid:
        server = dataclasses.replace(server, pid=current)
    return server if _is_ours(server) else None


def discard(home: Path) -> None:
    """Stop the server recorded in `home`, if any, and delete the directory with its data (wherever it is)."""
    server = load(home)
    if server is not None:
        processes.terminate(server.pid, server.stop_signal)
    files = files_dir(home)
    if files != home:
        shutil.rmtree(files, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


def files_dir(home: Path) -> Path:
    """Where the server recorded in `home` keeps its data and log: `home`, or the directory `elsewhere` names."""
    try:
        return Path((home / ELSEWHERE).read_text().strip())
    except OSError:
        return home


def postgres_tools(home: Path) -> Path:
    """The bin directory a throwaway PostgreSQL in `home` was started from (a private copy, or the found one)."""
    copied = files_dir(home) / "pgserver" / "pginstall" / "bin"  # _reachable_tools' copy of the wheel's
    return copied if copied.is_dir() else server_binaries.find_postgres().path


def _is_ours(server: Server) -> bool:
    if not processes.is_running(server.pid):
        return False
    command_line = processes.command_line(server.pid)
    return command_line is None or server.marker in command_line


def _save(home: Path, server: Server) -> Server:
    (home / RECORD).write_text(json.dumps(asdict(server)))
    return server


def start_redis(home: Path) -> Server:
    """Start an in-memory redis-server (no RDB, no AOF) on a free port with its files in `home`."""
    binaries = server_binaries.find_redis()
    home.mkdir(parents=True)
    port = processes.free_port()
    pid_file, log = home / "redis.pid", home / "redis.log"
    settings = {"bind": "127.0.0.1", "port": str(port), "save": "", "appendonly": "no", "daemonize": "yes"}
    settings |= {"pidfile": str(pid_file), "logfile": str(log), "dir": str(home)}
    processes.run([binaries.path, *(part for key, value in settings.items() for part in (f"--{key}", value))])
    url = f"redis://127.0.0.1:{port}/0"
    _wait(lambda: _read_pid(pid_file) is not None and redis_reachable(url), f"redis-server on port {port}", log)
    server = Server(url, _recorded_pid(pid_file), binaries.source, f"127.0.0.1:{port}", signal.SIGTERM)
    if not processes.is_running(server.pid):
        # Someone else's server took the port between free_port() and the bind; ours gave up.
        raise ServerError(f"redis-server exited; port {port} was taken.\n{_tail(log)}")
    return _save(home, server)


def start_postgres(home: Path) -> Server:
    """initdb a trust-auth cluster, start it on a free port and create the `conduit` database.

    Its files live in `home`, or where `files_dir(home)` says when PostgreSQL's user cannot reach `home`.
    """
    user = processes.unprivileged_user()
    home.mkdir(parents=True)
    files = _private_files_dir(home, user)
    binaries = server_binaries.find_postgres()
    bin_dir = _reachable_tools(binaries.path, files, user)
    data, sockets, log = files / "data", files / "run", files / "postgres.log"
    sockets.mkdir()
    if user is not None:
        processes.hand_over(user, files, sockets)
    # --no-sync and fsync=off: the data is thrown away, so durability would only cost time.
    initdb = ["-D", data, "-U", "postgres", "--auth=trust", "--no-locale", "--encoding=UTF8", "--no-sync"]
    processes.run([bin_dir / "initdb", *initdb], user, cwd=files)
    port = processes.free_port()
    # The unix socket goes in our directory: the default /var/run/postgresql may not exist or be writable.
    postgres = ["-p", str(port), "-k", str(sockets), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
    pg_ctl = ["start", "-w", "-t", str(int(_READY_TIMEOUT)), "-D", data, "-l", log, "-o", shlex.join(postgres)]
    try:
        processes.run([bin_dir / "pg_ctl", *pg_ctl], user, cwd=files)
    except ServerError as error:
        raise ServerError(f"{error}\n{_tail(log)}") from error
    pid = _recorded_pid(data / "postmaster.pid")
    url = f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"
    # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") would wait for every client to leave.
    server = _save(home, Server(url, pid, binaries.source, str(data), signal.SIGINT))
    run_sync(_create_database(port))
    return server


def _private_files_dir(home: Path, user: pwd.struct_passwd | None) -> Path:
    if user is None or processes.reachable_by(user, home):
        return home
    # mkdtemp: a fresh 0700 directory that we then give to the user; nothing else changes mode.
    files = Path(tempfile.mkdtemp(prefix="conduit-postgres-"))
    (home / ELSEWHERE).write_text(str(files))
    if not processes.reachable_by(user, files.parent):  # files itself is handed over below
        raise ServerError(
            f"{user.pw_name} (who runs PostgreSQL, which refuses root) can reach neither {home} nor {files}; "
            "set TMPDIR to a directory it can reach, or run as another user"
        )
    return files


def _reachable_tools(bin_dir: Path, files: Path, user: pwd.struct_passwd | None) -> Path:
    """`bin_dir`, or a private copy of its installation when PostgreSQL's user cannot reach it.

    The pgserver wheel's binaries live in .venv inside the clone, which may sit under a 0700 directory.
    """
    if user is None or processes.reachable_by(user, bin_dir):
        return bin_dir
    # The same layout one level down: the binaries' RPATH ($ORIGIN/../../../pgserver.libs) finds the
    # libraries auditwheel put beside the package.
    installation = bin_dir.parent
    package = installation.parent
    shutil.copytree(installation, files / package.name / installation.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, files / libs.name, symlinks=True)
    return files / package.name / installation.name / "bin"


async def _create_database(port: int) -> None:
    connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=_READY_TIMEOUT)
    try:
        await connection.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await connection.close()


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # not written yet, or half written


def _recorded_pid(pid_file: Path) -> int:
    pid = _read_pid(pid_file)
    if pid is None:
        raise ServerError(f"the server is up but {pid_file} holds no pid")
    return pid


def _wait(ready: Callable[[], bool], what: str, log: Path) -> None:
    try:
        processes.wait_until(ready, _READY_TIMEOUT, what)
    except ServerError as error:
        raise ServerError(f"{error}\n{_tail(log)}") from error


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"
