"""Fixtures for the throwaway-server tests: a private state dir that is always cleaned up."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.servers import stop_servers


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir for devtools.servers; whatever a test leaves running there is stopped afterwards."""
    directory = tmp_path / "servers"
    yield directory
    stop_servers(directory)


@pytest.fixture
def force_throwaway(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start throwaway servers even where the configured Redis/PostgreSQL answer."""
    monkeypatch.setenv("CONDUIT_FORCE_THROWAWAY", "1")
