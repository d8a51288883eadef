"""Fixtures for the deployment checks: the real tools, run without an engine or a cluster.

hadolint, helm and docker-compose are static binaries that PyPI packages put next to
the interpreter (.venv/bin); kubernetes-validate is a library with the Kubernetes
JSON schemas bundled, so every check here runs offline.  Helpers are fixtures rather
than an importable module so the tests work under any pytest import mode.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """Path of a command-line tool from the venv; a missing tool fails the test rather than skipping it."""

    def find(name: str) -> str:
        path = Path(sys.executable).parent / name
        if path.exists():
            return str(path)
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not installed: pip install -r requirements.lock")
        return found

    return find


@pytest.fixture(scope="session")
def run() -> Run:
    """Run a command from the repository root, capturing text output; check=True fails the test on error."""

    def execute(
        *args: str, input: str | None = None, check: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(args, cwd=REPO, input=input, env=env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    return execute
