"""The supervisor of ``conduit proxy --processes``, with children that only wait for a stop: fast enough to
send SIGTERM at many generated moments (before, while and after the forks; after a child was killed).

The parent runs in a process of its own (it blocks signals and forks, which pytest's process must not do).
Every process it starts carries a marker in its environment, so one left behind is found after its
parent is gone.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.auth_proxy.supervisor import exit_code
from tests.process_marks import marked

PARENT = r"""
import os, signal, sys
from services.auth_proxy.supervisor import STOPS, supervise

def child():
    # Ready, in one write (whole on a pipe): its stops stay blocked until sigwait takes one, so none is lost.
    os.write(1, b"%d\n" % os.getpid())
    signal.sigwait(STOPS)

sys.exit(supervise(child, (), int(sys.argv[1])))
"""


@contextmanager
def parent(count: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The supervisor over ``count`` children; whatever it started is killed at the end, passed or failed."""
    mark = secrets.token_hex(8)
    env = {**os.environ, "CONDUIT_TEST_MARK": mark}
    proc = subprocess.Popen([sys.executable, "-c", PARENT, str(count)], env=env, stdout=subprocess.PIPE, text=True)
    with proc:
        try:
            yield proc, mark
        finally:
            for pid in marked(mark):
                os.kill(pid, signal.SIGKILL)


def finish(proc: subprocess.Popen[str], mark: str) -> tuple[int, list[int]]:
    """The parent's exit code (it must exit by itself) and the pids its children printed; none may be left."""
    printed = proc.communicate(timeout=10)[0]
    assert marked(mark) == []
    assert proc.returncode is not None
    return proc.returncode, [int(line) for line in printed.split()]


def ready(proc: subprocess.Popen[str], count: int) -> list[int]:
    assert proc.stdout is not None
    return [int(proc.stdout.readline()) for _ in range(count)]


def reaped(pid: int) -> None:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():  # a zombie keeps its entry until its parent reaps it
        assert time.monotonic() < deadline, f"{pid} never reaped"
        time.sleep(0.001)  # polling a process we do not control


@pytest.mark.parametrize("reap_first", [True, False])
def test_a_killed_child_is_reported_and_the_others_are_stopped(reap_first: bool) -> None:
    with parent(3) as (proc, mark):
        kids = ready(proc, 3)
        os.kill(kids[1], signal.SIGKILL)
        if reap_first:  # what used to hang: the stop then signalled a pid already reaped
            reaped(kids[1])
        proc.send_signal(signal.SIGTERM)
        assert finish(proc, mark)[0] == 128 + signal.SIGKILL


def test_children_that_exit_by_themselves_end_the_parent_with_their_code() -> None:
    with parent(2) as (proc, mark):
        for kid in ready(proc, 2):
            os.kill(kid, signal.SIGKILL)
        assert finish(proc, mark)[0] == 137


@settings(max_examples=20, deadline=None)
@given(delay=st.floats(0, 0.3), kill_one=st.booleans(), twice=st.booleans())
@example(delay=0.0, kill_one=False, twice=False)
@example(delay=0.0, kill_one=False, twice=True)
def test_sigterm_at_any_moment_stops_everything(delay: float, kill_one: bool, twice: bool) -> None:
    with parent(2) as (proc, mark):
        time.sleep(delay)  # the generated moment, counted from the launch: an input, not a wait
        killed = False
        if kill_one:
            forked = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if forked:
                os.kill(int(forked[0]), signal.SIGKILL)
                killed = True
        proc.send_signal(signal.SIGTERM)
        if twice:
            proc.send_signal(signal.SIGTERM)
        code, kids = finish(proc, mark)
    if code == -signal.SIGTERM:
        # Killed by the default action: only possible before the supervisor ran, so before any fork.
        assert kids == []
    else:
        assert code == (137 if killed else 0)
        assert len(kids) == 2 or killed  # a child killed before it printed


@pytest.mark.parametrize(
    ("codes", "expected"),
    [([0, 0], 0), ([None, 0], 0), ([0, -9], 137), ([-15, 0], 143), ([1, -9], 1), ([0, 3], 3)],
)
def test_the_parents_exit_code(codes: list[int | None], expected: int) -> None:
    assert exit_code(codes) == expected
