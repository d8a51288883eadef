"""The parent of ``conduit proxy --processes N``: keep N children serving, pass one stop on, collect their exit codes.

It handles no signal with a Python handler. A handler runs wherever the main thread happens to be, and an
exception it raises comes out there: a handler that signalled a child the parent had already reaped got
ProcessLookupError, which surfaced inside ``os.waitpid`` in multiprocessing's ``Popen.poll``. That ``poll``
takes every OSError for "child not created yet" and returns None, so ``join`` returned with the other child
still running and never told to stop; multiprocessing's atexit hook then joined it for ever. Instead,
SIGTERM, SIGINT and SIGCHLD stay blocked from before the first fork, and one loop takes them with
``sigtimedwait``, reaps and restarts: a stop that comes at any moment (while forking, while a child starts,
while idle, after a child died, while one is restarted) waits for that loop, and a child is signalled only
while it is not reaped yet, so its pid cannot belong to another process.

Each child tells the parent, over a pipe of its own, either that it is ready (``serve`` calls ``ready`` once it
listens) or why it could not start; the parent reads that note when it reaps the child. A child that exits before
it is ready (invalid configuration, a taken port, an exception while starting) could not start, and a restart would
only repeat it: the parent logs its reason, stops the others and exits 1, as one process would. Any death after
ready (an uncaught exception at runtime exits 1 too, the OOM killer, a crash in C code, a stray kill), and a kill
by a signal while starting that left no note, is restarted instead: at once if it had served :data:`STEADY`
seconds, else after a back-off that doubles, so one that crashes again and again does not spin. Exit codes cannot
tell the two apart (Python exits 1 for any uncaught exception) and neither can time (a start can take seconds); a
note is written only by the child's own code, and an exit writes none. Each child dies with the parent
(``PR_SET_PDEATHSIG``): a parent killed by SIGKILL leaves no child serving on, unsupervised. (Hand-written:
multiprocessing has no supervisor, and gunicorn's arbiter would bring a second server and its own worker model for
these few lines.)
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from shared.logging import get_logger
from shared.stops import STOPS

_WATCHED = STOPS | {signal.SIGCHLD}
# A child that served this long after it was ready has shown it can serve, and died of something new (the OOM
# killer, a rare bug): its successor starts at once, to bring the capacity back, and its back-off starts over.
# As long as the longest back-off, so a crash that repeats the same way (the same bug on a timer or on a request
# that keeps coming) starts a slot at most once per MAX_DELAY once the back-off has grown: crashing every P >= STEADY
# seconds restarts at once, every P; sooner, the back-off grows to MAX_DELAY. (It was 10 s, counted from the
# fork: a crash every 10 to 30 s of serving then restarted at once each time, and a slow start counted as serving.)
STEADY = 30.0
# Back-off after a child that died sooner: 0.1 s, doubling with each such death in a row, at most 30 s.
FIRST_DELAY = 0.1
MAX_DELAY = 30.0
_COULD_NOT_START = 1  # the proxy's own exit code for configuration and listen errors (docs/operations.md)
_NOT_READY = "exited before it was ready"
_NOTE_SIZE = select.PIPE_BUF  # a child's one note to the parent: one write, whole in the pipe when it has exited
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = get_logger(__name__)


@dataclass
class _Slot:
    """One of the N places a child serves from, across its restarts."""

    child: BaseProcess | None = None
    notes: int | None = None  # the read end of the running child's pipe
    quick_deaths: int = 0  # in a row, each before STEADY of serving (or while starting)
    due: float | None = None  # when its next child starts; None while one runs (or none will)


def supervise(target: Callable[..., None], args: tuple[Any, ...], count: int) -> int:
    """Keep ``count`` forked copies of ``target(*args, ready=...)`` running until the first SIGTERM/SIGINT, which
    goes to each of them, then wait for them all. Returns their exit code (:func:`exit_code`).

    ``target`` calls ``ready()`` once it serves; if it exits before, it could not start, and all stop with 1.
    It starts with SIGTERM and SIGINT blocked and unblocks them once it handles them (``serve`` does).
    Call it from the main thread of a process that has no other threads.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    supervisor = _Supervisor(target, args, count)
    try:
        supervisor.run()
    finally:
        supervisor.abandon()
    return exit_code(supervisor.codes)


class _Supervisor:
    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], count: int) -> None:
        # fork, not spawn: spawn starts multiprocessing's resource tracker, one more Python
        # process (13 MB) watching for semaphores the proxy never makes, and has each child
        # import the `conduit` command again. Safe while the parent stays one thread, with
        # no event loop and nothing open but stdio.
        self.context = multiprocessing.get_context("fork")
        self.target, self.args = target, args
        self.slots = [_Slot() for _ in range(count)]
        self.stopping = False
        # The codes that end the run: each child's once stopping, and the one that could not start.
        self.codes: list[int] = []

    def run(self) -> None:
        for slot in self.slots:
            self._start(slot)
        while True:
            # Reaps every child that has exited (``exitcode`` does), each round. A child exiting after the
            # check leaves SIGCHLD pending, so sigtimedwait returns at once: no exit is missed.
            self._reap()
            if not self.stopping:
                self._start_due()
            if all(slot.child is None and slot.due is None for slot in self.slots):
                return
            info = self._take()
            if info is not None and info.si_signo in STOPS:
                self._stop(info.si_signo)

    def abandon(self) -> None:
        """Only if ``run`` raised (a fork refused): no child outlives the parent."""
        running = self._running()
        _signal(running, signal.SIGTERM)
        for child in running:
            child.join()

    def _start(self, slot: _Slot) -> None:
        reader, writer = os.pipe()
        os.set_blocking(reader, False)  # read once the child has exited: what it wrote is there, or nothing
        inherited = [reader, *(other.notes for other in self.slots if other.notes is not None)]
        child = self.context.Process(target=_child, args=(os.getpid(), writer, inherited, self.target, self.args))
        try:
            child.start()  # only a started child goes in its slot: ``abandon`` joins what is there
        except BaseException:
            os.close(reader)
            raise
        finally:
            os.close(writer)  # before any other fork: the child alone can write a note
        slot.child, slot.notes, slot.due = child, reader, None

    def _reap(self) -> None:
        for slot in self.slots:
            if slot.child is not None and slot.child.exitcode is not None:
                self._ended(slot, slot.child.pid, slot.child.exitcode)

    def _ended(self, slot: _Slot, pid: int | None, code: int) -> None:
        assert slot.notes is not None
        ready_at, reason = _read_note(slot.notes)
        slot.child, slot.notes = None, None
        if self.stopping:
            self.codes.append(code)
            return
        if ready_at is None and (code >= 0 or reason is not None):  # it exited, or it said why it could not start
            log.error("proxy process could not start", pid=pid, status=_status(code), reason=reason or _NOT_READY)
            self.codes.append(_COULD_NOT_START)
            self._stop(signal.SIGTERM)
            return
        # Ready and then dead, or killed while starting (the OOM killer, a stray kill: nothing says why).
        served = None if ready_at is None else time.monotonic() - ready_at
        slot.quick_deaths = 0 if served is not None and served >= STEADY else slot.quick_deaths + 1
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (slot.quick_deaths - 1)) if slot.quick_deaths else 0.0
        slot.due = time.monotonic() + delay
        log.warning(
            "proxy process exited",
            pid=pid,
            status=_status(code),
            served=None if served is None else round(served, 3),
            restart_in=round(delay, 3),
        )

    def _start_due(self) -> None:
        if signal.sigpending() & STOPS:  # a stop is waiting for this loop: starting a child now only delays it
            return
        now = time.monotonic()
        for slot in self.slots:
            if slot.due is not None and slot.due <= now:
                self._start(slot)

    def _take(self) -> signal.struct_siginfo | None:
        """The next watched signal, or None once a restart is due."""
        due = [slot.due for slot in self.slots if slot.due is not None]
        if not due:
            return signal.sigwaitinfo(_WATCHED)
        return signal.sigtimedwait(_WATCHED, max(0.0, min(due) - time.monotonic()))

    def _stop(self, signum: int) -> None:
        # Once: a child already drains, and one that has closed its event loop would take a second
        # SIGTERM by the default action.
        if not self.stopping:
            self.stopping = True
            for slot in self.slots:
                slot.due = None
            _signal(self._running(), signum)

    def _running(self) -> list[BaseProcess]:
        return [slot.child for slot in self.slots if slot.child is not None and slot.child.exitcode is None]


def _child(
    parent: int, writer: int, inherited: Sequence[int], target: Callable[..., None], args: tuple[Any, ...]
) -> None:
    for fd in inherited:  # the parent's read ends, its siblings' too: nothing for this child to read
        os.close(fd)
    note = _Note(writer)
    try:
        _die_with(parent)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        target(*args, ready=note.ready)
    except BaseException as exc:
        note.failed(exc)  # only if it never got ready: then this is why it could not start
        raise


class _Note:
    """The child's end of its pipe: one note, ``ready`` with the moment it was, or why it could not start."""

    def __init__(self, writer: int) -> None:
        self.writer: int | None = writer

    def ready(self) -> None:
        """Call once serving: a death from now on is a crash, restarted; before it, a failure to start."""
        self._send(f"ready {time.monotonic()!r}")  # CLOCK_MONOTONIC: the parent's clock too

    def failed(self, exc: BaseException) -> None:
        self._send(f"failed {_reason(exc)}")

    def _send(self, note: str) -> None:
        if self.writer is None:  # sent already: a child says once whether it started
            return
        writer, self.writer = self.writer, None
        try:
            os.write(writer, note.encode()[:_NOTE_SIZE])  # at most PIPE_BUF bytes: written whole or not at all
        except BrokenPipeError:
            pass  # the parent is gone, and its death signal stops this child
        finally:
            os.close(writer)


def _reason(exc: BaseException) -> str:
    """Why a child could not start, fit for a log line: the proxy's own message (``SystemExit("conduit proxy:
    cannot listen on ...")``, which it printed already), else only the exception's type: another message may
    carry anything, a URL with its password included, and the traceback is on the child's stderr."""
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, str) else _NOT_READY
    return f"uncaught {type(exc).__name__}"


def _read_note(reader: int) -> tuple[float | None, str | None]:
    """What an exited child wrote: when it was ready, or why it could not start; (None, None) if nothing."""
    try:
        note = os.read(reader, _NOTE_SIZE)
    except BlockingIOError:  # nothing written, and somehow a writer left (never this child: it has exited)
        note = b""
    finally:
        os.close(reader)
    kind, _, rest = note.decode(errors="replace").partition(" ")
    if kind == "ready":
        try:
            return float(rest), None
        except ValueError:
            pass
    return None, rest if kind == "failed" else None


def _die_with(parent: int) -> None:
    """SIGTERM when the parent dies, however it dies: the child then drains and stops as if the parent had
    passed a stop on. (prctl through ctypes: no dependency offers it for one call.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before prctl, so the signal will never come: there is no one to serve for
        raise SystemExit(0)


def _signal(children: Sequence[BaseProcess], signum: int) -> None:
    for child in children:
        # Not reaped (only this thread reaps), so the pid is still this child's, alive or a zombie.
        if child.pid is not None:
            os.kill(child.pid, signum)


def _status(code: int) -> str:
    """An exit status as an operator reads it: ``exit code 3`` or ``killed by SIGKILL``."""
    return f"exit code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


def exit_code(codes: Sequence[int | None]) -> int:
    """The first child's non-zero code; one killed by signal N as a shell shows it (128 + N), not hidden behind
    a sibling's 0."""
    return next((code if code > 0 else 128 - code for code in codes if code), 0)
