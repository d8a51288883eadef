"""Running wrk and reading its report (``--latency`` for the percentiles)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from bench._procs import BenchError, pinned

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50: float
    p99: float
    socket_errors: int
    bad_status: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run(
    url: str,
    connections: int,
    seconds: int,
    *,
    threads: int = 1,
    cpus: str | None = None,
    headers: dict[str, str] | None = None,
    while_running: Callable[[], None] | None = None,
) -> WrkResult:
    """One wrk run; ``while_running`` is called about every 0.1 s until it ends (for sampling)."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    proc = subprocess.Popen(pinned([*command, url], cpus), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while True:
        try:
            out, _ = proc.communicate(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            if while_running is not None:
                while_running()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{text}")
    return parse(text)


def parse(text: str) -> WrkResult:
    total = _TOTAL.search(text)
    percentiles = {p: float(v) * _UNITS[u] for p, v, u in _PERCENTILE.findall(text)}
    if total is None or {"50", "99"} - percentiles.keys():
        raise BenchError(f"cannot read wrk's report:\n{text}")
    errors = _SOCKET_ERRORS.search(text)
    bad = _NON_2XX.search(text)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNITS[total.group(3)],
        p50=percentiles["50"],
        p99=percentiles["99"],
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        bad_status=int(bad.group(1)) if bad else 0,
    )
