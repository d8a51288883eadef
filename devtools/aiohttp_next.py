"""The proxy's tests against the next aiohttp minor release, where PyPI has one (``make test-aiohttp-next``).

The proxy's transport relies on private aiohttp members (services/auth_proxy/transport/aiohttp_private.py),
so pyproject.toml pins aiohttp to the minor version the lock tests. This runs the proxy's suite in a venv of
its own (the lock, with only aiohttp raised to the newest release of the next minor) and says what broke before
anyone raises the pin. Where the next minor has no release yet, it says so and succeeds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".run" / "aiohttp-next"
# The suites that exercise the transport: the proxy's own, and its private-member check.
SUITES = ["tests/proxy"]


def pinned_version(lock: str) -> str:
    """The aiohttp version the lock pins."""
    found = re.search(r"^aiohttp==(\S+)$", lock, re.MULTILINE)
    if found is None:
        raise SystemExit("requirements.lock pins no aiohttp")
    return found.group(1)


def next_minor_release(available: list[str], pinned: str) -> str | None:
    """The newest final release of the minor version after ``pinned``'s; None if there is none."""
    major, minor = (int(part) for part in pinned.split(".")[:2])
    candidates = []
    for version in available:
        parts = version.split(".")
        if len(parts) == 3 and all(part.isdigit() for part in parts) and parts[:2] == [str(major), str(minor + 1)]:
            candidates.append(tuple(int(part) for part in parts))
    return ".".join(map(str, max(candidates))) if candidates else None


def released_versions() -> list[str]:
    """Every aiohttp version PyPI lists, through pip's ordinary client."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "aiohttp", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"Available versions: (.*)", out)
    return [v.strip() for v in found.group(1).split(",")] if found else []


def main() -> int:
    pinned = pinned_version((ROOT / "requirements.lock").read_text())
    major, minor = pinned.split(".")[:2]
    upcoming = next_minor_release(released_versions(), pinned)
    if upcoming is None:
        print(f"aiohttp {major}.{int(minor) + 1} has no release on PyPI yet (tested: {pinned}): nothing to run.")
        return 0
    print(f"The proxy's tests on aiohttp {upcoming} (the lock pins {pinned}), in {VENV.relative_to(ROOT)}")
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements.lock")], check=True)
    subprocess.run([*pip, f"aiohttp=={upcoming}"], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    # Tells tests/proxy/test_aiohttp_private.py that the installed aiohttp is not the pinned one on purpose.
    env = os.environ | {"CONDUIT_AIOHTTP_NEXT": upcoming}
    command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", *SUITES]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
