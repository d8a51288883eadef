import pytest

from shared.urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:hunter2@redis:6380/1", "redis://:***@redis:6380/1"),
        ("rediss://user:hunter2@r.example/0", "rediss://user:***@r.example/0"),
        (
            "postgresql://conduit:hunter2@db:5432/conduit?sslmode=verify-full",
            "postgresql://conduit:***@db:5432/conduit?sslmode=verify-full",
        ),
        ("postgresql://db/conduit?user=c&password=hunter2", "postgresql://db/conduit?user=c&password=%2A%2A%2A"),
    ],
)
def test_passwords_never_shown(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url)
