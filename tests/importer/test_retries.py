"""Transient failures are tried again through arq with growing, jittered backoff; permanent ones are not."""

from __future__ import annotations

import random

import pytest

from services.importer.import_job import backoff
from services.importer.settings import ImporterSettings
from tests.importer.conftest import Importer
from tests.importer.support import Answer, Exports, export_body

GOOD = export_body("users", "user_id,login\n1,ann\n2,bob\n")


async def test_401_429_5xx_and_timeouts_are_retried_until_the_export_comes(
    importer: Importer, exports: Exports
) -> None:
    stalled = Answer(GOOD, pause_after=10)  # sends 10 bytes, then nothing: the read timeout fires
    exports.sequence(
        "users",
        [
            Answer(b'{"error": "upstream_unreachable"}', status=503),
            Answer(b'{"error": "rate_limited"}', status=429, headers={"Retry-After": "0"}),
            Answer(b'{"error": "invalid_token"}', status=401),
            stalled,
            Answer(GOOD),
        ],
    )
    patient = importer.with_settings(importer_max_attempts=5, importer_fetch_read_timeout=0.3)

    result = await patient.run("acme", "users")
    stalled.resume.set()

    assert result.startswith("succeeded: 2 rows imported")
    runs = await importer.db.runs()
    assert [(r["attempt"], r["status"], r["error_class"], r["will_retry"]) for r in runs] == [
        (1, "failed", "http_503", True),
        (2, "failed", "http_429", True),
        (3, "failed", "http_401", True),
        (4, "failed", "proxy_timeout", True),
        (5, "succeeded", None, False),
    ]
    assert "the proxy answered 503: upstream_unreachable" in runs[0]["error_message"]
    assert await importer.db.value("SELECT count(*) FROM users") == 2


async def test_attempts_are_bounded_and_the_last_stays_failed(importer: Importer, exports: Exports) -> None:
    exports.set("users", b'{"error": "upstream_error"}', status=502)

    result = await importer.with_settings(importer_max_attempts=3).run("acme", "users")

    assert result.startswith("failed: http_502")
    runs = await importer.db.runs()
    assert [(r["attempt"], r["status"], r["will_retry"]) for r in runs] == [
        (1, "failed", True),
        (2, "failed", True),
        (3, "failed", False),
    ]
    assert len(exports.calls) == 3


async def test_the_proxy_being_down_is_transient(importer: Importer) -> None:
    down = importer.with_settings(proxy_url="http://127.0.0.1:9", importer_max_attempts=2)
    result = await down.run("acme", "users")
    assert result.startswith("failed: proxy_unreachable")
    assert [r["will_retry"] for r in await importer.db.runs()] == [True, False]


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_refusals_are_not_retried(importer: Importer, exports: Exports, status: int) -> None:
    exports.set("users", b'{"error": "nope"}', status=status)
    result = await importer.run("acme", "users")
    assert result.startswith(f"failed: http_{status}")
    assert len(exports.calls) == 1 and len(await importer.db.runs()) == 1


@pytest.mark.parametrize(
    ("tenant", "module", "date", "problem"),
    [
        ("nobody", "users", "2024-05-01", "unknown tenant 'nobody'"),
        ("acme", "nothing", "2024-05-01", "unknown module 'nothing'"),
        ("acme", "users", "01/05/2024", "is not YYYY-MM-DD"),
    ],
)
async def test_impossible_jobs_are_refused_without_a_retry(
    importer: Importer, exports: Exports, tenant: str, module: str, date: str, problem: str
) -> None:
    result = await importer.run(tenant, module, date)
    assert result.startswith("refused:") and problem in result
    assert exports.calls == [] and await importer.db.runs() == []


def test_backoff_grows_exponentially_with_full_jitter_and_honours_retry_after() -> None:
    settings = ImporterSettings(importer_retry_base=10, importer_retry_max=300)
    random.seed(7)
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 160), (6, 300), (9, 300)]:
        delays = [backoff(settings, attempt, None) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # jitter spans the range, it is not a constant
    assert min(backoff(settings, 1, 45.0) for _ in range(50)) >= 45.0
