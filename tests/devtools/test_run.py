"""`make run` (python -m devtools.run) as a person uses it: start, source .run/demo/env, Ctrl-C.

Ctrl-C is SIGINT to the whole foreground process group, as a terminal sends it; the throwaway
servers daemonize into sessions of their own and never get it, so the launcher must stop them.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import processes, throwaway
from devtools.probes import postgres_reachable, redis_reachable

ROOT = Path(__file__).resolve().parents[2]
CALLER_NEEDS = {"CONDUIT_REDIS_URL", "CONDUIT_DATABASE_URL", "CONDUIT_TENANTS_FILE", "CONDUIT_TOKEN_KEY"}


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_stops_every_process_make_run_started_and_the_env_file_steers_nothing(tmp_path: Path) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the process group")
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "CONDUIT_RUN_DIR": str(run_dir),
        "CONDUIT_FORCE_THROWAWAY": "1",
        **{f"CONDUIT_RUN_{name}_PORT": str(processes.free_port()) for name in ("DEMO_API", "PROXY", "IMPORTER")},
        "CONDUIT_RUN_SCHEDULER_PORT": str(processes.free_port()),
    }
    env_file = run_dir / "demo" / "env"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "devtools.run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, like a terminal's foreground job
    )
    try:
        # The env file is written once every process answers /ready.
        processes.wait_until(lambda: env_file.exists() or launcher.poll() is not None, 90, "make run ready")
        assert launcher.poll() is None, launcher.stdout.read().decode() if launcher.stdout else ""
        servers = {home: throwaway.load(run_dir / "servers" / home) for home in ("redis", "postgres")}
        assert all(servers.values()), servers
        members = _group_members(launcher.pid)
        assert len(members) >= 5, members  # launcher, demo-api, proxy, importer, scheduler

        written = _read_env(env_file)
        assert CALLER_NEEDS <= written.keys()
        assert "CONDUIT_FORCE_THROWAWAY" not in written and "CONDUIT_SERVER_SOURCE" not in written
        assert not any(key.startswith(("CONDUIT_RUN_", "CONDUIT_DEMO_")) for key in written), written
        assert redis_reachable(written["CONDUIT_REDIS_URL"])
        assert postgres_reachable(written["CONDUIT_DATABASE_URL"])

        os.killpg(launcher.pid, signal.SIGINT)
        output, _ = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 0, output.decode()
    # The launcher waits for each child before it exits, so none may be left in its group.
    assert _group_members(launcher.pid) == []
    for home, server in servers.items():
        assert server is not None and not processes.is_running(server.pid), home
    assert not (run_dir / "servers" / "redis").exists() and not (run_dir / "servers" / "postgres").exists()
    assert not redis_reachable(written["CONDUIT_REDIS_URL"])
