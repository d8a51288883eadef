"""Every arq pool, worker, job handle and (de)serialize call in the project uses shared/job_json.py, never
arq's default pickle: a read of the source, so that a new pool or worker cannot quietly bring pickle back.

arq falls back to pickle wherever a serializer is not passed: ``create_pool``, ``ArqRedis(...)``,
``Worker(...)``, ``Job(...)`` and its module's (de)serialize functions, and a ``WorkerSettings`` the arq
command reads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["services", "shared", "conduit", "bench", "tests", "deploy"]
HOME = ROOT / "shared" / "job_json.py"
# arq's name -> the keywords that keep it off pickle (any one of them, or a ``**CODEC``).
NEEDS = {
    "Worker": {"job_deserializer"},
    "OutageTolerantWorker": set(),  # defaults to the JSON pair itself
    "Job": {"_deserializer"},
    "deserialize_job": {"deserializer"},
    "deserialize_job_raw": {"deserializer"},
    "deserialize_result": {"deserializer"},
    "serialize_job": {"serializer"},
    "serialize_result": {"serializer"},
}
# Only shared/job_json.py may make these: everyone else uses its JsonArqRedis and create_pool.
HOME_ONLY = {"ArqRedis", "create_pool"}


def arq_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> arq's name, for what the file imports from arq."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "arq":
            names.update({alias.asname or alias.name: alias.name for alias in node.names})
    return names


def called(node: ast.Call) -> tuple[str, str | None]:
    """``f(...)`` -> (f, None); ``A.b(...)`` -> (A, b)."""
    func = node.func
    if isinstance(func, ast.Name):
        return func.id, None
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id, func.attr
    return "", None


def problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    arq = arq_names(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ClassDef) and node.name == "WorkerSettings":
            assigned = {
                t.id for n in node.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
            }
            if not {"job_serializer", "job_deserializer"} <= assigned:
                found.append(f"{where}: WorkerSettings without job_serializer and job_deserializer")
        if not isinstance(node, ast.Call):
            continue
        handed = [a.id for a in node.args if isinstance(a, ast.Name) and arq.get(a.id) == "ArqRedis"]
        if handed and path != HOME:
            found.append(f"{where}: arq's ArqRedis handed to a call (pickle by default); use JsonArqRedis")
        name, attr = called(node)
        original = arq.get(name) or (name if name == "OutageTolerantWorker" else None)
        if original is None or (attr is not None and attr != "from_url"):
            continue
        if original in HOME_ONLY and path != HOME:
            found.append(f"{where}: arq's {original} (pickle by default); use shared.job_json")
        elif original in NEEDS:
            keywords = {k.arg for k in node.keywords}
            if NEEDS[original] and not (None in keywords or NEEDS[original] & keywords):
                found.append(f"{where}: {original}(...) without {sorted(NEEDS[original])[0]}= (pickle by default)")
    return found


def sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)


def test_no_arq_pool_worker_or_job_falls_back_to_pickle() -> None:
    assert [problem for path in sources() for problem in problems(path)] == []


@pytest.mark.parametrize(
    "source",
    [
        "from arq.connections import create_pool\nasync def f(s): await create_pool(s)",
        "from arq.connections import ArqRedis\nArqRedis.from_url('redis://')",
        "from arq.worker import Worker\nWorker([], burst=True)",
        "from arq.jobs import Job\nJob('id', None)",
        "from arq.connections import ArqRedis\nconnect('redis://', None, ArqRedis)",
        "from arq.jobs import deserialize_result as d\nd(b'')",
        "class WorkerSettings:\n    functions = []",
    ],
)
def test_the_check_sees_each_way_back_to_pickle(source: str, tmp_path: Path) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert problems(path)
