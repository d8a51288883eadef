"""Process helpers for throwaway servers: free ports, liveness, stopping, and dropping root."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devtools.server_binaries import ServerError

_HAVE_PROC = Path("/proc/self/stat").exists()
_POLL_INTERVAL = 0.05
UNPRIVILEGED_USER = "nobody"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `ready` until it returns True; raise ServerError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServerError(f"{what}: not ready after {timeout:g}s")
        time.sleep(_POLL_INTERVAL)


def is_running(pid: int) -> bool:
    """True if `pid` is a live process (a zombie has exited; only its parent has not collected it yet)."""
    if pid <= 0:
        return False  # os.kill would signal a whole process group
    if _HAVE_PROC:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def command_line(pid: int) -> str | None:
    """The process's command line with spaces between arguments, or None where /proc is unavailable."""
    if not _HAVE_PROC:
        return None
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def terminate(pid: int, sig: int, timeout: float = 10.0) -> None:
    """Send `sig`, wait up to `timeout` seconds for the process to exit, then SIGKILL it."""
    for attempt, wait in ((sig, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, attempt)
        except ProcessLookupError:
            return
        try:
            wait_until(lambda: not is_running(pid), wait, f"process {pid} exiting")
            return
        except ServerError:
            continue
    raise ServerError(f"process {pid} survived SIGKILL")


def unprivileged_user() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as when we are root (postgres refuses root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise ServerError(f"running as root but there is no {UNPRIVILEGED_USER!r} user to run PostgreSQL as") from None


def hand_over(user: pwd.struct_passwd, *paths: Path) -> None:
    """Give `paths` to `user`. Their parents are left alone: see `reachable_by`."""
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)


def reachable_by(user: pwd.struct_passwd, path: Path) -> bool:
    """True if `user` may search every directory from / down to `path` (owner, group or other x bit).

    Checked rather than fixed: giving a parent the x bit (as this once did) changed modes outside the
    clone, e.g. a 0700 home directory became 0701. ACLs and supplementary groups are not considered,
    which can only make this answer False where the user could in fact reach the path.
    """
    for directory in (path, *path.parents):
        try:
            status = directory.stat()
        except OSError:
            return False
        if status.st_uid == user.pw_uid:
            allowed = status.st_mode & stat.S_IXUSR
        elif status.st_gid == user.pw_gid:
            allowed = status.st_mode & stat.S_IXGRP
        else:
            allowed = status.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def run(command: Sequence[object], user: pwd.struct_passwd | None = None, **kwargs: Any) -> None:
    """Run `command` to completion (as `user` if given); on failure raise ServerError with its output."""
    if user is not None:
        kwargs |= {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    try:
        subprocess.run([str(part) for part in command], check=True, capture_output=True, text=True, **kwargs)
    except (OSError, subprocess.CalledProcessError) as error:
        output = getattr(error, "stdout", "") + getattr(error, "stderr", "")
        raise ServerError(f"{Path(str(command[0])).name} failed: {error}\n{output.strip()}") from error
