"""A clone under a 0700 directory: PostgreSQL (run as an unprivileged user when we are root) still starts,
and no directory outside the clone changes mode (an earlier version gave every parent the x bit)."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import processes, server_binaries, throwaway
from devtools.probes import postgres_reachable


def _modes(paths: list[Path]) -> dict[Path, int]:
    return {path: path.stat().st_mode for path in paths}


def _outside(home: Path, clone: Path) -> list[Path]:
    """Every directory a server start could be tempted to open up: the clone's parents and the temp dir."""
    temp = Path(tempfile.gettempdir())
    return [*clone.parents, temp, *temp.parents]


@pytest.fixture
def clone() -> Iterator[Path]:
    """A clone inside a 0700 directory of this test's own, directly under the temp dir: pytest's tmp_path
    sits under /tmp/pytest-of-USER, which every concurrent pytest session shares (and an older checkout's
    devtools would still chmod), so its mode is no evidence about this code."""
    private = Path(tempfile.mkdtemp(prefix="conduit-0700-"))  # mode 0700
    inside = private / "c"  # short: the unix socket path inside must stay under 108 bytes
    inside.mkdir()
    yield inside
    shutil.rmtree(private, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("binaries_inside_the_clone", [False, True], ids=["found-binaries", "binaries-in-clone"])
def test_postgres_starts_in_a_clone_under_a_0700_directory_and_no_mode_outside_changes(
    clone: Path, binaries_inside_the_clone: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if binaries_inside_the_clone:
        # As with `make test` where only the pgserver wheel in the clone's .venv has PostgreSQL: the wheel's
        # layout (pgserver/pginstall/bin, and the libraries in pgserver.libs beside the package) copied in.
        monkeypatch.setenv(server_binaries.SOURCE_ENV, "package")
        wheel = server_binaries.find_postgres().path.parent.parent
        site = clone / ".venv" / "site-packages"
        shutil.copytree(wheel, site / wheel.name, symlinks=True)
        if (wheel.parent / f"{wheel.name}.libs").is_dir():
            shutil.copytree(wheel.parent / f"{wheel.name}.libs", site / f"{wheel.name}.libs", symlinks=True)
        copy = site / wheel.name / "pginstall" / "bin"
        monkeypatch.setattr(server_binaries, "find_postgres", lambda: server_binaries.Binaries("package", copy))
    home = clone / ".run" / "servers" / "postgres"
    watched = _outside(home, clone)
    before = _modes(watched)
    user = processes.unprivileged_user()

    try:
        server = throwaway.start_postgres(home)
        assert postgres_reachable(server.url)
        assert _modes(watched) == before
        files = throwaway.files_dir(home)
        if user is not None:
            assert not processes.reachable_by(user, home)
            assert files != home and processes.reachable_by(user, files)
            assert (files / "data").stat().st_uid == user.pw_uid
            if binaries_inside_the_clone:
                assert Path(f"/proc/{server.pid}/exe").resolve().is_relative_to(files)
        else:
            assert files == home
    finally:
        files = throwaway.files_dir(home) if hasattr(throwaway, "files_dir") else home
        throwaway.discard(home)
    assert not home.exists() and not files.exists()
    assert _modes(watched) == before


def test_reachable_by_reads_owner_group_and_other_bits(tmp_path: Path) -> None:
    import pwd

    me = pwd.getpwuid(os.getuid())
    other = pwd.struct_passwd(("x", "*", 54321, 54321, "", "/", "/bin/false"))
    walk = tmp_path / "walk"
    walk.mkdir()
    for mode, mine, theirs in ((0o700, True, False), (0o701, True, True), (0o070, False, False)):
        walk.chmod(mode)
        assert processes.reachable_by(me, walk) is (mine and processes.reachable_by(me, tmp_path)), oct(mode)
        assert processes.reachable_by(other, walk) is (theirs and processes.reachable_by(other, tmp_path)), oct(mode)
    walk.chmod(0o700)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_restarted_postgres_is_still_stopped_by_discard(tmp_path: Path) -> None:
    """pg_ctl restart gives the postmaster a new pid; discard must stop that one, not only the recorded one."""
    home = tmp_path / "pg"
    try:
        server = throwaway.start_postgres(home)
        files = throwaway.files_dir(home)
        pg_ctl = [throwaway.postgres_tools(home) / "pg_ctl", "restart", "-w", "-m", "fast"]
        processes.run([*pg_ctl, "-D", files / "data", "-l", files / "postgres.log"], processes.unprivileged_user())
        restarted = throwaway.load(home)
        assert restarted is not None and restarted.pid != server.pid
    finally:
        throwaway.discard(home)
    assert not processes.is_running(restarted.pid)
