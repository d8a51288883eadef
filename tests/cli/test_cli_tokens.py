"""`conduit tokens ...` against real Redis and a real token endpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from redis.asyncio import Redis

from conduit.cli import main
from tests.helpers import tenants_file
from tests.third_party import ThirdParty


@pytest.fixture
def env(redis: Redis, redis_url: str, token_key: SecretStr, tmp_path: Path, party: ThirdParty) -> dict[str, str]:
    return {
        "CONDUIT_REDIS_URL": redis_url,
        "CONDUIT_TENANTS_FILE": str(tenants_file(tmp_path, party, ["acme", "globex"])),
        "CONDUIT_TOKEN_KEY": token_key.get_secret_value(),
    }


async def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    # The commands run their own event loop, so they run in a thread beside the fake third party's.
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


async def test_refresh_then_status(env: dict[str, str], party: ThirdParty) -> None:
    code, out, _ = await invoke(env, "tokens", "refresh", "acme")
    assert code == 0 and "acme/demo: refreshed, generation 1" in out
    code, out, _ = await invoke(env, "tokens", "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["tenant", "provider"]
    acme = next(line for line in lines if line.startswith("acme"))
    globex = next(line for line in lines if line.startswith("globex"))
    assert "client_credentials (operator)" in acme and ("1m00s" in acme or "0m59s" in acme)
    assert "never" in globex
    code, out, _ = await invoke(env, "tokens", "status", "--json")
    rows = {r["tenant"]: r for r in orjson.loads(out)}
    assert rows["acme"]["generation"] == 1 and rows["globex"]["expires_in"] is None
    assert not any(token in out for token in party.tokens)


async def test_failed_refresh_shows_in_status(env: dict[str, str], party: ThirdParty) -> None:
    party.token_mode = "invalid_client"
    code, _, err = await invoke(env, "tokens", "refresh", "acme", "--provider", "demo")
    assert code == 1 and "invalid_client" in err
    code, out, _ = await invoke(env, "tokens", "status", "--json")
    acme = next(r for r in orjson.loads(out) if r["tenant"] == "acme")
    assert acme["error_kind"] == "permanent" and "invalid_client" in acme["last_error"]
    assert "secret" not in out


async def test_unknown_tenant_and_bad_config(env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = await invoke(env, "tokens", "refresh", "nobody")
    assert code == 1 and "unknown tenant 'nobody'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {}\ntenants: {}\n")
    code, _, err = await invoke({**env, "CONDUIT_TENANTS_FILE": str(bad)}, "tokens", "status")
    assert code == 1 and str(bad) in err and "providers" in err
    code, _, err = await invoke({**env, "CONDUIT_TOKEN_KEY": "short"}, "tokens", "status")
    assert code == 1 and "CONDUIT_TOKEN_KEY is not a valid Fernet key" in err


async def test_processes_refuse_bad_configuration_at_start(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  demo: {token_url: 'http://x/t', api_base_url: 'http://x/'}\n"
        "tenants:\n  acme: {providers: {demo: {client_id: a, client_secret: {env: NOT_SET_ANYWHERE}}}}\n"
    )
    code, _, err = await invoke({**env, "CONDUIT_TENANTS_FILE": str(bad)}, "proxy")
    assert code == 1 and str(bad) in err and "tenant 'acme'" in err and "NOT_SET_ANYWHERE" in err
    code, _, err = await invoke({**env, "CONDUIT_PROXY_PORT": "eighty"}, "proxy")
    assert code == 1 and "CONDUIT_PROXY_PORT" in err
