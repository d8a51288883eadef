"""docs/benchmarks.md: each bench owns the text between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_TITLE = "# Benchmarks\n\nFigures written by `make bench` (`python -m bench`); each section by its own bench.\n"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def section(path: Path, name: str) -> str | None:
    """The text between the markers of ``name``, or None when the file or the markers are missing."""
    if not path.exists():
        return None
    begin, end = markers(name)
    found = re.search(re.escape(begin) + r"\n?(.*?)" + re.escape(end), path.read_text(), re.DOTALL)
    return found.group(1) if found else None


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the text between the markers of ``name`` (append the section if it is missing)."""
    begin, end = markers(name)
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else _TITLE
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
