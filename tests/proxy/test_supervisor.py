"""The supervisor of ``conduit proxy --processes``, with children that only wait for a stop (or crash at once):
fast enough to send SIGTERM at many generated moments (before, while and after the forks; after a child was
killed, while it waits to be restarted, while its replacement starts), and to kill the parent itself.

The parent runs in a process of its own (it blocks signals and forks, which pytest's process must not do).
Every process it starts carries a marker in its environment, so one left behind is found after its
parent is gone.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.auth_proxy.supervisor import FIRST_DELAY, STEADY, exit_code
from tests.process_marks import marked

PARENT = r"""
import os, signal, sys, time
from services.auth_proxy import supervisor
from shared.logging import configure_logging

def child(crash):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    # Ready, in one write (whole on a pipe): its stops stay blocked until sigwait takes one, so none is lost.
    os.write(1, b"%d %f\n" % (os.getpid(), time.monotonic()))
    if crash:
        sys.exit(crash)  # at once, at every start
    if signal.sigwait(supervisor.STOPS | {signal.SIGUSR1}) == signal.SIGUSR1:  # told to fail as a bad configuration
        sys.exit(1)

configure_logging(json=True)  # to stderr
count, crash, supervisor.STEADY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sys.exit(supervisor.supervise(child, (crash,), count))
"""


@dataclass
class Finished:
    code: int
    kids: list[int]  # every child that started, in order, replacements included
    exits: list[dict[str, Any]]  # the parent's "proxy process exited" lines


@dataclass
class Supervisor:
    proc: subprocess.Popen[bytes]
    mark: str
    starts: list[tuple[int, float]] = field(default_factory=list)

    def started(self, timeout: float = 10.0) -> tuple[int, float]:
        """The next child to start: its pid and its start (CLOCK_MONOTONIC, which all processes share)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"no child started within {timeout} s"
        pid, at = self.proc.stdout.readline().split()
        self.starts.append((int(pid), float(at)))
        return self.starts[-1]

    def ready(self, count: int) -> list[int]:
        return [self.started()[0] for _ in range(count)]

    def finish(self) -> Finished:
        """The parent's exit code (it must exit by itself), its children and its log; none may be left."""
        printed, logged = self.proc.communicate(timeout=10)
        assert marked(self.mark) == [], logged.decode()
        assert self.proc.returncode is not None
        kids = [pid for pid, _ in self.starts] + [int(line.split()[0]) for line in printed.splitlines()]
        exits = [orjson.loads(line) for line in logged.splitlines() if b'"proxy process exited"' in line]
        return Finished(self.proc.returncode, kids, exits)


@contextmanager
def parent(count: int, crash: int = 0, steady: float = STEADY) -> Iterator[Supervisor]:
    """The supervisor over ``count`` children (each exiting with ``crash`` at once if not 0, each death after
    ``steady`` seconds restarted at once); whatever it started is killed at the end, passed or failed."""
    mark = secrets.token_hex(8)
    env = {**os.environ, "CONDUIT_TEST_MARK": mark}
    args = [sys.executable, "-c", PARENT, str(count), str(crash), str(steady)]
    # Unbuffered: a line is read only once select saw it, and none waits in a buffer select cannot see.
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    with proc:
        try:
            yield Supervisor(proc, mark)
        finally:
            for pid in marked(mark):
                os.kill(pid, signal.SIGKILL)


def reaped(pid: int) -> None:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():  # a zombie keeps its entry until its parent reaps it
        assert time.monotonic() < deadline, f"{pid} never reaped"
        time.sleep(0.001)  # polling a process we do not control


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGKILL, "killed by SIGKILL"), (signal.SIGTERM, "exit code 0")])
def test_a_child_that_dies_is_replaced_and_its_exit_logged(signum: int, status: str) -> None:
    with parent(2) as run:
        kids = run.ready(2)
        os.kill(kids[0], signum)
        replacement = run.started()[0]
        assert replacement not in kids
        assert alive(replacement) and alive(kids[1])
        run.proc.send_signal(signal.SIGTERM)
        done = run.finish()
    assert (done.code, done.kids) == (0, [*kids, replacement])
    assert done.exits == [
        {**done.exits[0], "level": "warning", "pid": kids[0], "status": status, "restart_in": FIRST_DELAY}
    ]


def test_a_death_after_a_steady_run_is_replaced_at_once() -> None:
    with parent(1, steady=0.0) as run:
        kid = run.ready(1)[0]
        os.kill(kid, signal.SIGKILL)
        run.started()
        run.proc.send_signal(signal.SIGTERM)
        done = run.finish()
    assert done.code == 0 and [line["restart_in"] for line in done.exits] == [0.0]


def test_a_child_that_dies_at_once_is_restarted_ever_more_slowly() -> None:
    with parent(1, crash=3) as run:
        starts = [run.started() for _ in range(5)]
        reaped(starts[-1][0])  # its successor waits out the back-off: the stop comes with no child running
        run.proc.send_signal(signal.SIGTERM)
        done = run.finish()
    delays = [line["restart_in"] for line in done.exits]
    assert done.code == 0 and delays == [FIRST_DELAY * 2**n for n in range(5)]
    assert {line["status"] for line in done.exits} == {"exit code 3"}
    for (_, before), (_, after), delay in zip(starts, starts[1:], delays, strict=False):
        assert after - before >= delay


def test_a_child_that_cannot_start_stops_the_others_and_the_parent_exits_1() -> None:
    with parent(3) as run:
        kids = run.ready(3)
        os.kill(kids[1], signal.SIGUSR1)  # exits 1, the proxy's code for a bad configuration or a taken port
        done = run.finish()
    assert (done.code, done.kids) == (1, kids)
    assert [(line["level"], line["pid"], line["restart_in"]) for line in done.exits] == [("error", kids[1], None)]


def test_the_children_stop_when_the_parent_is_killed() -> None:
    with parent(2) as run:
        kids = run.ready(2)
        run.proc.kill()
        run.proc.wait()
        for kid in kids:  # SIGTERM from the kernel (PR_SET_PDEATHSIG): each orphan stops
            deadline = time.monotonic() + 10
            while alive(kid):
                assert time.monotonic() < deadline, f"{kid} still running without its parent"
                time.sleep(0.001)  # polling a process we do not control
        assert marked(run.mark) == []


@pytest.mark.parametrize("still_there", [True, False])
def test_a_child_whose_parent_died_before_it_asked_to_die_with_it_exits(still_there: bool) -> None:
    script = "import sys; from services.auth_proxy.supervisor import _die_with as d; d(int(sys.argv[1])); print('ran')"
    parent_pid = os.getpid() if still_there else 1  # 1: as if the parent had gone and init had adopted it
    ran = subprocess.run([sys.executable, "-c", script, str(parent_pid)], capture_output=True, text=True, check=True)
    assert ran.stdout == ("ran\n" if still_there else "")


@settings(max_examples=20, deadline=None)
@given(kills=st.lists(st.floats(0, 0.3), max_size=3), delay=st.floats(0, 0.3), twice=st.booleans())
@example(kills=[], delay=0.0, twice=False)
@example(kills=[], delay=0.0, twice=True)
@example(kills=[0.2], delay=0.0, twice=False)  # SIGTERM right after a death: before or during the restart
@example(kills=[0.2], delay=0.05, twice=False)  # while the slot waits out its back-off
@example(kills=[0.2], delay=0.1, twice=False)  # as the replacement forks
def test_sigterm_at_any_moment_stops_everything(kills: list[float], delay: float, twice: bool) -> None:
    """``kills``: each a pause, then SIGKILL to a child there is then (the moments are inputs, not waits)."""
    with parent(2) as run:
        killed = 0
        for pause in kills:
            time.sleep(pause)
            forked = Path(f"/proc/{run.proc.pid}/task/{run.proc.pid}/children").read_text().split()
            if forked:
                os.kill(int(forked[0]), signal.SIGKILL)
                killed += 1
        time.sleep(delay)
        run.proc.send_signal(signal.SIGTERM)
        if twice:
            run.proc.send_signal(signal.SIGTERM)
        done = run.finish()
    if done.code == -signal.SIGTERM:
        # Killed by the default action: only possible before the supervisor ran, so before any fork.
        assert done.kids == [] and killed == 0
    else:
        # 137: a child killed just before the stop, seen dead only once stopping (not restarted then).
        assert done.code == 0 or (done.code == 137 and killed)
        assert len(done.exits) <= killed  # every other death was replaced, and logged
        assert len(done.kids) >= 2 - killed  # a child killed before it printed


@pytest.mark.parametrize(
    ("codes", "expected"),
    [([0, 0], 0), ([None, 0], 0), ([0, -9], 137), ([-15, 0], 143), ([1, -9], 1), ([0, 3], 3)],
)
def test_the_parents_exit_code(codes: list[int | None], expected: int) -> None:
    assert exit_code(codes) == expected
