"""Jobs and Redis going away: the ledger decides what is done, and what Redis interrupted runs again.

The processes living through an outage are tested end to end in tests/e2e/test_redis_outage.py; these
are the job-level consequences, each against real PostgreSQL and Redis.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from arq.constants import result_key_prefix
from arq.worker import Retry
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from devtools.processes import free_port
from services.importer.limits import ProviderRate, TenantSlots
from services.importer.token_jobs import refresh_token
from shared.crypto import Sealer
from shared.refresh import Refresher
from shared.tenants import load_tenants
from shared.token_store import TokenStore
from tests.importer.conftest import Importer, write_tenants
from tests.importer.support import Exports, export_body

USERS = "user_id,login,email\n1,ann,ann@example.com\n2,bob,bob@example.com\n"


async def redeliver(importer: Importer, job_id: str) -> None:
    """What arq holds when a worker's write of the outcome never reached Redis: the job, and no result."""
    await importer.arq.delete(result_key_prefix + job_id)


async def test_a_job_handed_out_again_after_its_import_committed_is_not_imported_again(
    importer: Importer, exports: Exports
) -> None:
    exports.set("users", export_body("users", USERS))
    first = await importer.run("acme", "users", job_id="outage")
    assert first.startswith("succeeded: 2 rows imported")
    await redeliver(importer, "outage")

    assert await importer.run("acme", "users", job_id="outage") == first
    runs = await importer.db.runs()
    assert [(r["job_id"], r["attempt"], r["status"]) for r in runs] == [("outage", 1, "succeeded")]
    assert len(exports.calls) == 1


async def test_a_job_handed_out_again_after_a_failed_attempt_runs_again(importer: Importer, exports: Exports) -> None:
    exports.set("users", b'{"error": "not_found"}', status=404)
    assert (await importer.run("acme", "users", job_id="outage")).startswith("failed")
    await redeliver(importer, "outage")
    exports.set("users", export_body("users", USERS))

    assert (await importer.run("acme", "users", job_id="outage")).startswith("succeeded")
    assert [r["status"] for r in await importer.db.runs()] == ["failed", "succeeded"]


@pytest.mark.parametrize(("limiter", "method"), [(TenantSlots, "try_acquire"), (ProviderRate, "wait")])
async def test_redis_away_at_the_tenant_slot_or_provider_rate_retries_the_import(
    importer: Importer, exports: Exports, monkeypatch: pytest.MonkeyPatch, limiter: type, method: str
) -> None:
    exports.set("users", export_body("users", USERS))
    real = getattr(limiter, method)
    failures = [RedisConnectionError("Connection closed by server.")]

    async def once_away(self: object, *args: object) -> object:
        if failures:
            raise failures.pop()
        return await real(self, *args)

    monkeypatch.setattr(limiter, method, once_away)

    assert (await importer.run("acme", "users")).startswith("succeeded")
    assert not failures
    assert [r["status"] for r in await importer.db.runs()] == ["succeeded"]


async def test_a_refresh_job_steps_back_while_redis_is_away(tmp_path: Path, token_key: SecretStr) -> None:
    away = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    tenants = load_tenants(write_tenants(tmp_path))
    try:
        ctx = {"refresher": Refresher(TokenStore(away, Sealer(token_key)), tenants)}
        with pytest.raises(Retry):
            await refresh_token(ctx, "acme", "demo")
    finally:
        await away.aclose()
