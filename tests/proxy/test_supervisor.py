"""The supervisor of ``conduit proxy --processes``, with children that only follow a plan (get ready, wait for a
stop or SIGUSR1, crash or exit): fast enough to send SIGTERM at many generated moments (before, while and after
the forks; after a child was killed, while it waits to be restarted, while its replacement starts), to kill the
parent itself, and to end a child before or after it is ready (could not start, against crashed once serving).

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

def child(plan, ready=lambda: None):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    for step in plan.split(","):
        if step == "seen":  # in one write (whole on a pipe): the test reads it as this child's start
            os.write(1, b"%d %f\n" % (os.getpid(), time.monotonic()))
        elif step == "ready":
            ready()
        elif step == "wait":  # for a stop (then exits 0) or SIGUSR1 (then the next step); none is lost meanwhile
            if signal.sigwait(supervisor.STOPS | {signal.SIGUSR1}) != signal.SIGUSR1:
                return
        elif step == "raise":
            raise RuntimeError("token=" + SECRET)
        elif step == "say":  # as serve() does for a taken port or invalid settings
            sys.exit("conduit proxy: cannot listen on 127.0.0.1:1: Address already in use")
        elif step.startswith("_exit"):  # bypasses every Python handler, the supervisor's included
            os._exit(int(step[5:]))
        else:
            sys.exit(int(step[4:]))  # "exitN"

configure_logging(json=True)  # to stderr
count, plan, supervisor.STEADY, SECRET = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
sys.exit(supervisor.supervise(child, (plan,), count))
"""
SECRET = "s3cr3t-" + secrets.token_hex(8)
SERVE = "ready,seen,wait"  # ready, then serves until stopped (or SIGUSR1, which ends its plan: exit 0)


@dataclass
class Finished:
    code: int
    kids: list[int]  # every child seen, in order, replacements included
    exits: list[dict[str, Any]]  # the parent's "proxy process exited" and "... could not start" lines
    stderr: str


@dataclass
class Supervisor:
    proc: subprocess.Popen[bytes]
    mark: str
    starts: list[tuple[int, float]] = field(default_factory=list)

    def started(self, timeout: float = 10.0) -> tuple[int, float]:
        """The next child seen: its pid and when (CLOCK_MONOTONIC, which all processes share)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"no child seen within {timeout} s"
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
        lines = [orjson.loads(line) for line in logged.splitlines() if line.startswith(b"{")]
        exits = [line for line in lines if line["event"].startswith("proxy process")]
        return Finished(self.proc.returncode, kids, exits, logged.decode())


@contextmanager
def parent(count: int, plan: str = SERVE, steady: float = STEADY) -> Iterator[Supervisor]:
    """The supervisor over ``count`` children, each running ``plan`` (PARENT's steps) at every start, each death
    ``steady`` seconds after ready restarted at once; whatever it started is killed at the end, passed or failed."""
    mark = secrets.token_hex(8)
    env = {**os.environ, "CONDUIT_TEST_MARK": mark}
    args = [sys.executable, "-c", PARENT, str(count), plan, str(steady), SECRET]
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


def could_not_start(pid: int, status: str, reason: str) -> dict[str, Any]:
    return {"event": "proxy process could not start", "level": "error", "pid": pid, "status": status, "reason": reason}


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
    assert done.exits[0]["event"] == "proxy process exited" and done.exits[0]["served"] >= 0


def test_a_death_after_a_steady_run_is_replaced_at_once() -> None:
    with parent(1, steady=0.0) as run:
        kid = run.ready(1)[0]
        os.kill(kid, signal.SIGKILL)
        run.started()
        run.proc.send_signal(signal.SIGTERM)
        done = run.finish()
    assert done.code == 0 and [line["restart_in"] for line in done.exits] == [0.0]


@pytest.mark.parametrize(
    ("crash", "status"),
    [
        ("raise", "exit code 1"),  # an uncaught exception at runtime: exit 1, as for a bad configuration
        ("exit1", "exit code 1"),
        ("exit3", "exit code 3"),
    ],
)
def test_a_child_that_crashes_once_ready_is_restarted_ever_more_slowly(crash: str, status: str) -> None:
    with parent(1, plan=f"ready,seen,{crash}") as run:
        starts = [run.started() for _ in range(5)]
        reaped(starts[-1][0])  # its successor waits out the back-off: the stop comes with no child running
        run.proc.send_signal(signal.SIGTERM)
        done = run.finish()
    delays = [line["restart_in"] for line in done.exits]
    assert done.code == 0 and delays == [FIRST_DELAY * 2**n for n in range(5)]
    assert {(line["event"], line["status"]) for line in done.exits} == {("proxy process exited", status)}
    assert all(0 <= line["served"] < STEADY for line in done.exits)
    for (_, before), (_, after), delay in zip(starts, starts[1:], delays, strict=False):
        assert after - before >= delay
    assert SECRET not in str(done.exits)


def test_the_back_off_counts_from_ready_and_starts_over_after_a_steady_run() -> None:
    steady = 1.0
    with parent(1, plan="seen,wait,ready,seen,wait,raise", steady=steady) as run:
        for slow_start, served in [(steady, 0.0), (0.0, steady), (0.0, 0.0)]:
            kid = run.started()[0]
            time.sleep(slow_start)  # how long it takes to start: an input, not a wait for an event
            os.kill(kid, signal.SIGUSR1)  # ready
            assert run.started()[0] == kid
            time.sleep(served)  # how long it serves: an input too
            os.kill(kid, signal.SIGUSR1)  # raises
        run.started()  # the fourth, still starting: the stop ends it
        run.proc.send_signal(signal.SIGTERM)
        done = run.finish()
    # A long start does not count as serving; a steady run restarts at once and the back-off starts over.
    assert done.code == 0 and [line["restart_in"] for line in done.exits] == [FIRST_DELAY, 0.0, FIRST_DELAY]


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        ("exit1", "exited before it was ready"),
        ("say", "conduit proxy: cannot listen on 127.0.0.1:1: Address already in use"),  # serve()'s message
        ("raise", "uncaught RuntimeError"),  # its message may hold anything: left to the child's traceback
    ],
)
def test_a_child_that_cannot_start_stops_the_others_and_the_parent_exits_1(cause: str, reason: str) -> None:
    with parent(3, plan=f"seen,wait,{cause},ready") as run:
        kids = run.ready(3)
        os.kill(kids[1], signal.SIGUSR1)
        done = run.finish()
    assert (done.code, done.kids) == (1, kids)
    assert done.exits == [{**done.exits[0], **could_not_start(kids[1], "exit code 1", reason)}]
    assert SECRET not in str(done.exits)


@settings(max_examples=8, deadline=None)
@given(code=st.integers(0, 255), bypass=st.booleans())
@example(code=0, bypass=False)  # a clean exit is no sign that it started
@example(code=3, bypass=False)  # what the supervisor used to restart
@example(code=0, bypass=True)
def test_an_exit_before_ready_is_never_taken_for_a_start(code: int, bypass: bool) -> None:
    """``bypass``: ``os._exit``, past every Python handler, the child's side of the supervisor's included."""
    with parent(2, plan=f"seen,wait,{'_exit' if bypass else 'exit'}{code},ready") as run:
        kids = run.ready(2)
        os.kill(kids[0], signal.SIGUSR1)
        done = run.finish()
    assert (done.code, done.kids) == (1, kids)
    assert done.exits == [
        {**done.exits[0], **could_not_start(kids[0], f"exit code {code}", "exited before it was ready")}
    ]


def test_a_child_killed_while_starting_is_restarted_with_a_back_off() -> None:
    """Killed from outside (the OOM killer, a stray kill): nothing says a second start would fail too."""
    with parent(1, plan="seen,wait,ready,seen,wait") as run:
        kid = run.started()[0]
        os.kill(kid, signal.SIGKILL)
        replacement = run.started()[0]
        os.kill(replacement, signal.SIGUSR1)  # this one gets ready
        assert run.started()[0] == replacement
        run.proc.send_signal(signal.SIGTERM)
        done = run.finish()
    assert done.code == 0
    assert done.exits == [
        {**done.exits[0], "event": "proxy process exited", "pid": kid, "status": "killed by SIGKILL", "served": None}
    ]
    assert done.exits[0]["restart_in"] == FIRST_DELAY


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
