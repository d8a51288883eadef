"""Processes a test started, found by a mark in their environment: orphans included, so none is left behind."""

from __future__ import annotations

from pathlib import Path

MARK_ENV = "CONDUIT_TEST_MARK"


def marked(mark: str) -> list[int]:
    """Processes whose environment holds ``CONDUIT_TEST_MARK=mark``: what the test started, orphaned or not."""
    needle = f"{MARK_ENV}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours
                pass
    return found
