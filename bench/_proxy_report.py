"""The proxy bench's figures: medians of paired runs, the markdown table and the targets."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# The targets, as ratios to nginx in the same run, on one core.
TARGET_RATIO = {"1k": 0.15, "1m": 0.8}
TARGET_P99_OVER_P50 = 2.5
TARGET_PEAK_MB = 150.0

_LAYOUTS = {
    "one-core": "nginx with 1 worker or the proxy with 1 process pinned to CPU 0 (`taskset -c 0`); "
    "wrk (1 thread), the upstream nginx and the token endpoint pinned to CPU 1",
    "one-core-tls": "as one-core, with the upstream over TLS as every production provider is (nginx verifying "
    "its certificate with `proxy_ssl_verify`, the proxy with `CONDUIT_PROXY_UPSTREAM_CA_FILE`): large answers "
    "cannot be spliced and are copied through the proxy",
    "two-process": "nginx with 2 workers, the proxy with `--processes 2` (its RSS: the parent's and the two "
    "workers' together); nothing pinned, wrk (1 thread) and the "
    "upstream share both CPUs",
}
_BODY = {"1k": "1 KB", "1m": "1 MB"}


@dataclass
class Row:
    layout: str
    size: str
    connections: int
    nginx: dict[str, float] | None
    proxy: dict[str, float] | None
    ratio: float | None
    trouble: str
    logged: dict[str, int]


def summarise(layout: str, size: str, connections: int, runs: Sequence[Any]) -> Row:
    """Medians per side; the ratio is the median of each round's proxy/nginx, so drift cancels."""
    by_side = {side: [r for r in runs if r.target == side] for side in ("nginx", "proxy")}
    ratios = [p.rps / n.rps for n, p in zip(by_side["nginx"], by_side["proxy"], strict=False) if n.rps]
    logged: dict[str, int] = {}
    for r in runs:
        for event, n in r.log_problems.items():
            logged[event] = logged.get(event, 0) + n
    trouble = [
        f"{r.target}: {r.socket_errors} socket errors, {r.bad_status} non-2xx answers"
        for r in runs
        if r.socket_errors or r.bad_status
    ]
    return Row(
        layout,
        size,
        connections,
        _medians(by_side["nginx"]),
        _medians(by_side["proxy"]),
        statistics.median(ratios) if ratios else None,
        "; ".join(trouble),
        logged,
    )


def _medians(runs: Sequence[Any]) -> dict[str, float] | None:
    if not runs:
        return None
    out = {k: statistics.median(getattr(r, k) for r in runs) for k in ("rps", "p50", "p99", "cpu_us")}
    out["peak_mb"] = max(r.peak_mb for r in runs)
    return out


def render(rows: Sequence[Row], env: dict[str, str]) -> str:
    lines = [
        f"_Written by `python -m bench proxy` on {env['date']} at commit {env['commit']}: {env['cpu']}, "
        f"{env['cpus']} CPUs, Linux {env['kernel']}, Python {env['python']}, aiohttp {env['aiohttp']}, "
        f"{env['nginx']}, wrk {env['wrk']}. {env['rounds']} paired rounds of {env['duration']} s "
        f"(after {env['warmup']} s of warm-up) per line, medians; the proxy's access log {env['access_log']}, "
        "as in production._",
        "",
    ]
    lines += [f"- **{name}**: {text}." for name, text in _LAYOUTS.items() if any(r.layout == name for r in rows)]
    lines += [
        "",
        "| layout | body | conns | nginx req/s | proxy req/s | proxy / nginx | nginx p50 / p99 | proxy p50 / p99 "
        "| proxy p99 / p50 | CPU per request nginx / proxy | peak RSS nginx / proxy |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [_line(r) for r in rows]
    lines += ["", *_targets(rows)]
    trouble = [f"- {r.layout} {_BODY[r.size]} c={r.connections}: {r.trouble}" for r in rows if r.trouble]
    logged: dict[str, int] = {}
    for r in rows:
        for event, n in r.logged.items():
            logged[event] = logged.get(event, 0) + n
    trouble += [f"- the proxy logged {event!r} {n} times over all its runs" for event, n in logged.items()]
    if trouble:
        lines += [
            "",
            "Problems seen during the runs (warnings and errors in the proxy's log, failed requests):",
            *trouble,
        ]
    return "\n".join(lines) + "\n"


def _line(r: Row) -> str:
    n, p = r.nginx or {}, r.proxy or {}
    cells = [
        r.layout,
        _BODY[r.size],
        str(r.connections),
        _num(n.get("rps"), "{:,.0f}"),
        _num(p.get("rps"), "{:,.0f}"),
        _num(r.ratio, "{:.3f}"),
        f"{_ms(n.get('p50'))} / {_ms(n.get('p99'))}",
        f"{_ms(p.get('p50'))} / {_ms(p.get('p99'))}",
        _num(p["p99"] / p["p50"] if p.get("p50") else None, "{:.1f}"),
        f"{_num(n.get('cpu_us'), '{:.0f}')} / {_num(p.get('cpu_us'), '{:.0f}')} µs",
        f"{_num(n.get('peak_mb'), '{:.0f}')} / {_num(p.get('peak_mb'), '{:.0f}')} MB",
    ]
    return "| " + " | ".join(cells) + " |"


def _targets(rows: Sequence[Row]) -> list[str]:
    one = [r for r in rows if r.layout == "one-core" and r.proxy]
    if not one:
        return []
    out = ["Targets (one core, ratios from the same run):", ""]
    for size, floor in TARGET_RATIO.items():
        got = [(r.connections, r.ratio) for r in one if r.size == size and r.ratio is not None]
        out += _check(f"{_BODY[size]}: proxy ≥ {floor} × nginx", got, lambda v, f=floor: v >= f, "{:.3f}")
    at256 = [r for r in one if r.connections == 256 and r.proxy and r.proxy["p50"]]
    spread = [(_BODY[r.size], r.proxy["p99"] / r.proxy["p50"]) for r in at256 if r.proxy]
    out += _check(
        f"p99 ≤ {TARGET_P99_OVER_P50} × p50 at 256 connections", spread, lambda v: v <= TARGET_P99_OVER_P50, "{:.1f}"
    )
    mem = [(r.connections, r.proxy["peak_mb"]) for r in one if r.size == "1m" and r.connections == 256 and r.proxy]
    out += _check(
        f"proxy peak RSS < {TARGET_PEAK_MB:.0f} MB (1 MB, 256 conns)", mem, lambda v: v < TARGET_PEAK_MB, "{:.0f} MB"
    )
    return out


def _check(what: str, got: Sequence[tuple[Any, float]], ok: Callable[[float], bool], fmt: str) -> list[str]:
    if not got:
        return []
    values = ", ".join(f"{label if isinstance(label, str) else f'{label} conns'} {fmt.format(v)}" for label, v in got)
    verdict = "met" if all(ok(v) for _, v in got) else "**missed**"
    return [f"- {what}: {values} — {verdict}"]


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"
