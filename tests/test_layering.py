"""Data flows one way: services depend on shared/, never on each other; shared/ never on services.

shared/ holds only what two or more deployables use, and the tenants file's module holds no schedule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ["auth_proxy", "importer", "scheduler", "console"]
# Who may use shared/: the four services, and `conduit` (the operator commands, run from the same image).
DEPLOYABLES = {**{s: ROOT / "services" / s for s in SERVICES}, "conduit": ROOT / "conduit"}


def imports_of(path: Path) -> set[str]:
    """Absolute imports of one file; ``from shared import x`` counts as ``shared.x``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "shared":
                found.update(f"shared.{alias.name}" for alias in node.names)
    return found


def imported_modules(package: Path) -> set[tuple[Path, str]]:
    return {(path, module) for path in package.rglob("*.py") for module in imports_of(path)}


def test_shared_imports_no_service() -> None:
    bad = [(str(p.relative_to(ROOT)), m) for p, m in imported_modules(ROOT / "shared") if m.startswith("services")]
    assert bad == []


@pytest.mark.parametrize("service", SERVICES)
def test_service_imports_no_other_service(service: str) -> None:
    others = tuple(f"services.{s}" for s in SERVICES if s != service)
    found = imported_modules(ROOT / "services" / service)
    bad = [(str(p.relative_to(ROOT)), m) for p, m in found if m.startswith(others) or m.startswith(("conduit", "demo"))]
    assert bad == []


def _shared_closure(names: set[str]) -> set[str]:
    """The shared modules among ``names``, and every shared module they import in turn."""
    seen: set[str] = set()
    stack = [n for n in names if n.startswith("shared.")]
    while stack:
        name = stack.pop()
        path = ROOT / (name.replace(".", "/") + ".py")
        if name not in seen and path.exists():
            seen.add(name)
            stack.extend(n for n in imports_of(path) if n.startswith("shared."))
    return seen


def test_shared_holds_only_what_two_deployables_use() -> None:
    users: dict[str, set[str]] = {}
    for deployable, folder in DEPLOYABLES.items():
        for name in _shared_closure({m for _, m in imported_modules(folder)}):
            users.setdefault(name, set()).add(deployable)
    modules = {f"shared.{p.stem}" for p in (ROOT / "shared").glob("*.py") if p.stem != "__init__"}
    lonely = {m: sorted(users.get(m, set())) for m in modules if len(users.get(m, set())) < 2}
    assert lonely == {}, "a shared/ module that one deployable uses belongs in that deployable"


def test_the_tenants_file_module_holds_no_schedule() -> None:
    # The schedule schema and cron handling are shared/schedules.py's (the scheduler and the console read them).
    tenants = ROOT / "shared" / "tenants.py"
    tree = ast.parse(tenants.read_text())
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef)}
    assert "croniter" not in imports_of(tenants)
    assert defined & {"ScheduleSpec", "ModuleImports", "TenantImports", "ImportDefaults", "_check_cron"} == set()
