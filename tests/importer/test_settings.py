"""The importer's settings under the names they had when it was called the worker (CONDUIT_WORKER_*)."""

from __future__ import annotations

import os

import pytest

from services.importer.settings import _RENAMED, ImporterSettings, deprecated_names


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CONDUIT_")]:
        monkeypatch.delenv(name)


def test_every_old_name_is_read_as_its_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"http_host": "127.0.0.2", "http_port": "9101", "poll_delay": "0.25", "max_jobs": "3"}
    values |= {"refresh_timeout": "30", "import_timeout": "120", "import_keep_result": "7"}
    assert set(values) == set(_RENAMED)
    for suffix, value in values.items():
        monkeypatch.setenv(f"CONDUIT_WORKER_{suffix.upper()}", value)
    settings = ImporterSettings()
    assert {suffix: str(getattr(settings, f"importer_{suffix}")) for suffix in values} == {
        **values,
        "refresh_timeout": "30.0",
        "import_timeout": "120.0",
        "import_keep_result": "7.0",
    }
    assert deprecated_names() == [f"CONDUIT_WORKER_{suffix.upper()}" for suffix in _RENAMED]


def test_the_new_name_wins_and_arguments_win_over_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDUIT_WORKER_MAX_JOBS", "3")
    monkeypatch.setenv("CONDUIT_IMPORTER_MAX_JOBS", "4")
    assert ImporterSettings().importer_max_jobs == 4
    assert ImporterSettings(importer_max_jobs=5).importer_max_jobs == 5


def test_without_old_names_nothing_is_deprecated() -> None:
    assert deprecated_names() == []
    assert ImporterSettings().importer_max_jobs == 10
