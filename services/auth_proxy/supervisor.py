"""The parent of ``conduit proxy --processes N``: start the children, pass one stop on, collect their exit codes.

It handles no signal with a Python handler. A handler runs wherever the main thread happens to be, and an
exception it raises comes out there: a handler that signalled a child the parent had already reaped got
ProcessLookupError, which surfaced inside ``os.waitpid`` in multiprocessing's ``Popen.poll``. That ``poll``
takes every OSError for "child not created yet" and returns None, so ``join`` returned with the other child
still running and never told to stop; multiprocessing's atexit hook then joined it for ever. Instead,
SIGTERM, SIGINT and SIGCHLD stay blocked from before the first fork, and one loop takes them with
``sigwaitinfo`` and reaps: a stop that comes at any moment (while forking, while a child starts, while
idle, after a child died) waits for that loop, and a child is signalled only while it is not reaped yet, so
its pid cannot belong to another process. (Hand-written: multiprocessing has no supervisor, and gunicorn's
arbiter would bring a second server and its own worker model for these few lines.)
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from shared.stops import STOPS

_WATCHED = STOPS | {signal.SIGCHLD}


def supervise(target: Callable[..., None], args: tuple[Any, ...], count: int) -> int:
    """Run ``count`` forked copies of ``target(*args)`` until they all exit; the first SIGTERM/SIGINT goes to
    each of them. Returns their exit code (:func:`exit_code`).

    ``target`` starts with SIGTERM and SIGINT blocked and unblocks them once it handles them (``serve`` does).
    Call it from the main thread of a process that has no other threads.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    # fork, not spawn: spawn starts multiprocessing's resource tracker, one more Python
    # process (13 MB) watching for semaphores the proxy never makes, and has each child
    # import the `conduit` command again. Safe while the parent stays one thread, with
    # no event loop and nothing open but stdio.
    context = multiprocessing.get_context("fork")
    children: list[BaseProcess] = []
    try:
        for _ in range(count):
            child = context.Process(target=_child, args=(target, args))
            child.start()
            children.append(child)
        _wait(children)
    finally:
        # Only if something above raised (a fork refused): no child outlives the parent.
        _signal_running(children, signal.SIGTERM)
        for started in children:
            started.join()
    return exit_code([started.exitcode for started in children])


def _child(target: Callable[..., None], args: tuple[Any, ...]) -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    target(*args)


def _wait(children: Sequence[BaseProcess]) -> None:
    told = False
    # ``exitcode`` reaps a child that has exited (every child, each round: a zombie is not left for later). A
    # child exiting after the check leaves SIGCHLD pending, so sigwaitinfo returns at once: no exit is missed.
    while [child for child in children if child.exitcode is None]:
        signum = signal.sigwaitinfo(_WATCHED).si_signo
        if signum in STOPS and not told:
            # Once: a child already drains, and one that has closed its event loop would take a second
            # SIGTERM by the default action.
            told = True
            _signal_running(children, signum)


def _signal_running(children: Sequence[BaseProcess], signum: int) -> None:
    for child in children:
        # Not reaped (only this thread reaps), so the pid is still this child's, alive or a zombie.
        if child.exitcode is None and child.pid is not None:
            os.kill(child.pid, signum)


def exit_code(codes: Sequence[int | None]) -> int:
    """The first child's non-zero code; one killed by signal N as a shell shows it (128 + N), not hidden behind
    a sibling's 0."""
    return next((code if code > 0 else 128 - code for code in codes if code), 0)
