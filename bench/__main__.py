"""``python -m bench``: run every bench, or ``python -m bench <name> [options]`` to run one.

A bench is any public module of this package with a ``main(argv: list[str]) -> int``;
adding ``bench/importer.py`` is enough for ``python -m bench importer`` to work.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from types import ModuleType

import bench

Main = Callable[[list[str]], int]


def benches() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if callable(getattr(module, "main", None)):
            found[info.name] = module
    return found


def _usage(found: dict[str, ModuleType]) -> str:
    lines = ["usage: python -m bench [NAME] [OPTIONS]   (no NAME: every bench, OPTIONS passed to each)", ""]
    for name, module in found.items():
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        lines.append(f"  {name:<12} {summary}")
    lines.append("\n`python -m bench NAME --help` shows a bench's options.")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    found = benches()
    if argv and argv[0] in ("-h", "--help", "--list"):
        print(_usage(found))
        return 0
    if argv and not argv[0].startswith("-"):
        name, rest = argv[0], argv[1:]
        if name not in found:
            print(f"bench: no bench named {name!r}\n\n{_usage(found)}", file=sys.stderr)
            return 2
        return int(found[name].main(rest))
    worst = 0
    for name, module in found.items():
        print(f"== bench {name}", flush=True)
        worst = max(worst, int(module.main(list(argv))))
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
