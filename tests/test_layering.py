"""Data flows one way: services depend on shared/, never on each other; shared/ never on services."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ["auth_proxy", "importer", "scheduler", "console"]


def imported_modules(package: Path) -> set[tuple[Path, str]]:
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update((path, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((path, node.module))
    return found


def test_shared_imports_no_service() -> None:
    bad = [(str(p.relative_to(ROOT)), m) for p, m in imported_modules(ROOT / "shared") if m.startswith("services")]
    assert bad == []


@pytest.mark.parametrize("service", SERVICES)
def test_service_imports_no_other_service(service: str) -> None:
    others = tuple(f"services.{s}" for s in SERVICES if s != service)
    found = imported_modules(ROOT / "services" / service)
    bad = [(str(p.relative_to(ROOT)), m) for p, m in found if m.startswith(others) or m.startswith(("conduit", "demo"))]
    assert bad == []
