"""The installed package (what `pip install .` puts in the image) carries the console's templates and static files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_wheel_from_a_clean_tree_has_the_console_templates_and_static_files(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    # Only what git tracks: no egg-info or build/ left by an editable install to hide a missing declaration.
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=tree, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    console = REPO / "services" / "console"
    wanted = {str(p.relative_to(REPO)) for d in ("templates", "static") for p in (console / d).iterdir()}
    assert wanted and wanted <= names, sorted(wanted - names)
